# %% [markdown] ko
# # 06. 위치 추정, 객체 탐지, 분할 (Géron 14.8-14.10)
# 실제 패션 MNIST 물건을 배치한 장면(FashionScenes)으로 경계 상자, IoU, 완전 합성곱 신경망, 분할
# 마스크를 봅니다. 훈련은 `cnnkit train localize|detect|segment`로 합니다(docs/detection.md).
# %% [markdown] en
# # 06. Localization, detection and segmentation (Géron 14.8-14.10)
# Scenes of real Fashion-MNIST items (FashionScenes): bounding boxes, IoU, a fully convolutional
# network, segmentation masks. Training runs with `cnnkit train localize|detect|segment`
# (docs/detection.md).
# %%
import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle
from torchvision.ops import box_iou

from cnnkit.data.scenes import FashionScenes
from cnnkit.runs.folder import load_run
from cnnkit.tasks.fully_conv import to_fully_convolutional
from cnnkit.viz.lang import figure_names

scenes = FashionScenes(split="test", num_images=8 if SMALL else 64, canvas=96, max_objects=4).load()
target = scenes.target(0)
print(target)

# %% [markdown] ko
# ## 경계 상자와 분할 마스크
# %% [markdown] en
# ## Bounding boxes and the segmentation mask
# %%
names = figure_names(scenes.class_names)
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
axes[0].imshow(scenes.images[0, 0], cmap="gray_r")
for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
    x0, y0, x1, y1 = box
    axes[0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red"))
    axes[0].text(x0, y0, names[label], color="red", fontsize=8)
axes[1].imshow(scenes.semantic_mask(0), cmap="tab20")
axes[0].set_title("boxes")
axes[1].set_title("semantic mask (0 = background)")
plt.show()

# %% [markdown] ko
# ## IoU (Géron 14.8)
# 겹친 넓이 / 합친 넓이. (0, 0, 10, 10)과 (5, 5, 15, 15): 25 / (100 + 100 - 25) = 0.143.
# %% [markdown] en
# ## IoU (Géron 14.8)
# Intersection over union: (0, 0, 10, 10) and (5, 5, 15, 15) give 25 / (100 + 100 - 25) = 0.143.
# %%
a, b = torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 5, 15, 15]])
print(round(box_iou(a, b).item(), 4), round(25 / (100 + 100 - 25), 4))

# %% [markdown] ko
# ## 완전 합성곱 신경망 (Géron 14.9)
# 28×28로 훈련한 분류기의 밀집 층을 합성곱으로 바꾸면 큰 장면 전체에 한 번에 적용해 클래스 점수 지도를
# 얻습니다. 28×28에서는 원래 분류기와 같은 로짓을 냅니다.
# %% [markdown] en
# ## A fully convolutional network (Géron 14.9)
# Turning the dense layers of a classifier trained on 28×28 into convolutions applies it to a
# whole scene in one pass and gives a map of class scores; on 28×28 it gives the classifier's logits.
# %%
model, _ = load_run("fashion", device="cpu")
model.eval()
fcn = to_fully_convolutional(model)
x = torch.rand(1, 1, 28, 28)
with torch.no_grad():
    print("same logits on 28×28:", torch.allclose(fcn(x).flatten(), model(x).flatten(), atol=1e-5))
    scene = scenes.images[:1].float() / 255
    scores = fcn(scene)
print("score map for a 96×96 scene:", tuple(scores.shape))
