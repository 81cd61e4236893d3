# %% [markdown] ko
# # 01. 합성곱과 풀링, 그리고 모양 계산
# 혼공머신 8-1, Géron 14.1-14.3, 이미지 텐서 노트, 모양·파라미터 노트. 손으로 한 계산을 cnnkit의 층과
# 파이토치로 확인합니다. 텐서는 파이토치 순서 (N, C, H, W)이고, 입력 크기는 케라스처럼 HxWxC로 씁니다.
# %% [markdown] en
# # 01. Convolution, pooling and shapes
# 혼공머신 8-1, Géron 14.1-14.3, the notes on image tensors and on shapes and parameters. Every
# number worked by hand is checked against cnnkit's layers and PyTorch. Tensors are in PyTorch's
# (N, C, H, W) order; input sizes are written HxWxC, as Keras does.
# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import sklearn.datasets
import torch
import torch.nn.functional as F

from cnnkit import summary
from cnnkit.data.image_io import load_image
from cnnkit.layers import (
    AvgPool2D, Conv2D, Dense, DepthMaxPool, Flatten, GlobalAvgPool2D, MaxPool2D, conv_output_size,
)

# %% [markdown] ko
# ## 이미지 텐서
# 사진 한 장은 (행, 열, 채널) 배열이고, 케라스의 배치는 (샘플, 행, 열, 채널), 파이토치의 배치는
# (샘플, 채널, 행, 열)입니다. scikit-learn에 들어 있는 china.jpg와 flower.jpg를 읽습니다.
# %% [markdown] en
# ## Image tensors
# A photo is a (rows, cols, channels) array; a Keras batch is (samples, rows, cols, channels), a
# PyTorch batch (samples, channels, rows, cols). scikit-learn ships china.jpg and flower.jpg.
# %%
folder = Path(sklearn.datasets.__file__).parent / "images"
photos = np.stack([load_image(folder / name) for name in ("china.jpg", "flower.jpg")])
print("Keras order (N, H, W, C):", photos.shape)
images = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255
print("PyTorch order (N, C, H, W):", tuple(images.shape))

# %% [markdown] ko
# ## 합성곱: 세로선과 가로선 필터 (Géron 14.2)
# 7×7 필터 두 개(가운데 세로줄, 가운데 가로줄)를 모든 채널에 적용합니다. 'same' 패딩은 크기를 그대로
# 두고, 'valid'는 7 - 1 = 6픽셀 줄입니다.
# %% [markdown] en
# ## Convolution: a vertical and a horizontal line filter (Géron 14.2)
# Two 7×7 filters (a vertical and a horizontal white line) on every channel. 'same' padding keeps
# the size; 'valid' loses 7 - 1 = 6 pixels.
# %%
filters = torch.zeros(2, 3, 7, 7)
filters[0, :, :, 3] = 1  # vertical line
filters[1, :, 3, :] = 1  # horizontal line
conv = Conv2D(2, 7, padding="same", use_bias=False)
conv(images[:1])  # input channels are taken from the first batch, as Keras does
with torch.no_grad():
    conv.weight.copy_(filters)
    same = conv(images)
    valid = F.conv2d(images, filters)
print("same :", tuple(same.shape), " valid:", tuple(valid.shape))
reference = F.conv2d(images, filters, padding="same")
print("equal to PyTorch's own 'same':", torch.allclose(same, reference, atol=1e-5))
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
axes[0].imshow(photos[0])
axes[1].imshow(same[0, 0], cmap="gray")
axes[2].imshow(same[0, 1], cmap="gray")
for ax, title in zip(axes, ["china.jpg", "vertical filter", "horizontal filter"]):
    ax.set_title(title)
    ax.axis("off")
plt.show()

# %% [markdown] ko
# 스트라이드가 있으면 'same'의 출력은 ceil(입력 / 스트라이드)입니다: 70×120 입력, 7×7, 스트라이드 2 →
# 35×60. 'valid'는 floor((입력 - 커널) / 스트라이드) + 1입니다.
# %% [markdown] en
# With a stride, 'same' gives ceil(input / stride): a 70×120 input, 7×7, stride 2 → 35×60.
# 'valid' gives floor((input - kernel) / stride) + 1.
# %%
print(conv_output_size(70, 7, stride=2, padding="same"), conv_output_size(120, 7, stride=2, padding="same"))
print(conv_output_size(70, 7, stride=2, padding="valid"), (70 - 7) // 2 + 1)
x = torch.zeros(1, 3, 70, 120)
print(tuple(Conv2D(32, 7, strides=2, padding="same")(x).shape))

# %% [markdown] ko
# ## 풀링: 강의의 4×4 예제 (Géron 14.3)
# 2×2 창, 스트라이드 2의 최대 풀링은 [[6, 4], [8, 9]], 평균 풀링은 [[3.75, 2.25], [5.0, 3.5]]입니다.
# %% [markdown] en
# ## Pooling: the course's 4×4 example (Géron 14.3)
# A 2×2 window with stride 2: max pooling gives [[6, 4], [8, 9]], average pooling
# [[3.75, 2.25], [5.0, 3.5]].
# %%
grid = torch.tensor([[1, 3, 2, 4], [5, 6, 1, 2], [7, 8, 9, 0], [3, 2, 1, 4]], dtype=torch.float32)
x = grid.view(1, 1, 4, 4)
print(MaxPool2D(2)(x)[0, 0])
print(AvgPool2D(2)(x)[0, 0])
print("global average:", GlobalAvgPool2D()(x).flatten().item(), "=", grid.mean().item())
# depth-wise max pooling: 3 channels -> 1, the maximum across channels at each pixel
depth = DepthMaxPool(3)(images)
print("depth-wise:", tuple(depth.shape), bool((depth[:, 0] == images.amax(1)).all()))

# %% [markdown] ko
# ## (39, 31, 1) 계산 과정 (모양·파라미터 노트)
# 노트의 손 계산: (39 - 4) / 1 + 1 = 36, (31 - 4) / 1 + 1 = 28, ... 마지막 합성곱 뒤 (2, 1, 80) → 160.
# 노트는 편향 없이 가중치만 셉니다(4·4·1·20 = 320). 케라스와 파이토치는 편향도 셉니다(340).
# %% [markdown] en
# ## The (39, 31, 1) walk-through (the notes on shapes and parameters)
# Worked by hand in the notes: (39 - 4) / 1 + 1 = 36, (31 - 4) / 1 + 1 = 28, ... (2, 1, 80) after
# the last convolution → 160. The notes count weights only (4·4·1·20 = 320); Keras and PyTorch
# count the biases too (340).
# %%
walk = torch.nn.Sequential(
    Conv2D(20, 4), MaxPool2D(2), Conv2D(40, 3), MaxPool2D(2), Conv2D(60, 3), MaxPool2D(2), Conv2D(80, 2),
    Flatten(), Dense(100),
)
report = summary(walk, "39x31x1")
print(report)
by_hand = [(36, 28, 20), (18, 14, 20), (16, 12, 40), (8, 6, 40), (6, 4, 60), (3, 2, 60), (2, 1, 80)]
shapes = [r.output_shape for r in report.rows if len(r.output_shape) == 3]
print("matches the notes (H, W, C):", [(h, w, c) for c, h, w in shapes] == by_hand)
weights_only = [r.params - r.output_shape[0] for r in report.rows if r.type == "Conv2D"]
print("weights without biases:", weights_only, "(the notes: 320, 7,200, 21,600, 19,200)")
