# %% [markdown] ko
# # 04. CNN 구조와 메모리 계산 (Géron 14.4, 14.5, 14.11)
# Géron의 패션 MNIST CNN(파라미터 1,413,834개), 유명한 구조들의 파라미터 수, 잔차 유닛으로 만든
# ResNet-34, 그리고 연습문제 9의 메모리 계산(파라미터 903,400개).
# %% [markdown] en
# # 04. CNN architectures and the memory exercise (Géron 14.4, 14.5, 14.11)
# Géron's Fashion-MNIST CNN (1,413,834 parameters), the landmark architectures' parameter
# counts, ResNet-34 from residual units, and exercise 9's memory arithmetic (903,400 parameters).
# %%
import torch

from cnnkit import create_model, list_models, summary

print(summary(create_model("geron_fashion_cnn"), "28x28x1"))

# %% [markdown] ko
# ## 유명한 구조의 파라미터 수
# 가중치를 만들지 않는 `meta` 장치에서 모델을 만들어 빠르게 셉니다(ImageNet 1000 클래스 기준).
# %% [markdown] en
# ## Parameters of the landmark architectures
# Built on PyTorch's `meta` device (no memory for the weights), with 1000 ImageNet classes.
# %%
names = ["lenet5", "alexnet", "googlenet", "vgg16", "resnet34", "resnet50", "xception", "seresnet50"]
assert set(names) <= set(list_models())
with torch.device("meta"):
    for name in names:
        count = sum(p.numel() for p in create_model(name).parameters())
        print(f"{name:<12} {count:>13,}")

# %% [markdown] ko
# ## ResNet-34 (Géron 14.5)
# 7×7 합성곱 64개 → 잔차 유닛 64×3, 128×4, 256×6, 512×3 → 전역 평균 풀링 → 밀집 1000.
# %% [markdown] en
# ## ResNet-34 (Géron 14.5)
# A 7×7 conv with 64 maps → residual units 64×3, 128×4, 256×6, 512×3 → global average pooling →
# dense 1000.
# %%
model = create_model("resnet34")
resnet34 = summary(model, "224x224x3")
print(f"{resnet34.total_params:,} parameters, {resnet34.total_macs / 1e9:.2f} GMACs per image")
for stage in ("layer1", "layer2", "layer3", "layer4"):
    units = list(model.get_submodule(stage))
    print(stage, len(units), "residual units of", units[0].conv1.out_channels, "maps")

# %% [markdown] ko
# ## 연습문제 9: 메모리
# 200×300 RGB 이미지에 3×3, 스트라이드 2, 'same' 합성곱 세 개(맵 100, 200, 400개). 파라미터는
# (3·3·3 + 1)·100 + (3·3·100 + 1)·200 + (3·3·200 + 1)·400 = 903,400개(32비트 실수로 3.6 MB).
# 이미지 한 장의 활성값은 (100·150·100 + 50·75·200 + 25·38·400)·4바이트 = 10.5 MB, 배치 50개면 526 MB.
# %% [markdown] en
# ## Exercise 9: memory
# Three 3×3, stride-2, 'same' convolutions (100, 200 and 400 maps) on a 200×300 RGB image.
# Parameters: (3·3·3 + 1)·100 + (3·3·100 + 1)·200 + (3·3·200 + 1)·400 = 903,400 (3.6 MB in 32-bit
# floats). One image's activations: (100·150·100 + 50·75·200 + 25·38·400)·4 bytes = 10.5 MB; a
# batch of 50: 526 MB.
# %%
exercise = summary(create_model("exercise_cnn"), "200x300x3", batch_size=50)
print(exercise)
by_hand = (3 * 3 * 3 + 1) * 100 + (3 * 3 * 100 + 1) * 200 + (3 * 3 * 200 + 1) * 400
activations = (100 * 150 * 100 + 50 * 75 * 200 + 25 * 38 * 400) * 4
print(exercise.total_params == by_hand == 903_400, exercise.activation_bytes == activations)
print(f"{activations / 1e6:.1f} MB per image, {50 * activations / 1e6:.0f} MB for 50")
