"""Instance segmentation: torchvision's Mask R-CNN (He et al. 2017) on FashionScenes.

Two ways to build one:

- on a cnnkit backbone (``build_mask_rcnn('geron_fashion_cnn', ...)``): its stages feed a
  torchvision FeaturePyramidNetwork, with anchors and RoI levels sized for small canvases; every
  weight starts fresh (a short CPU schedule trains it);
- torchvision's own architectures (``'maskrcnn_resnet50_fpn'``, ``'maskrcnn_resnet50_fpn_v2'``),
  which load the published COCO weights (a local file, or a torchvision weights name such as
  ``'COCO_V1'`` when torchvision's cache holds it) and then get new box and mask predictors for
  the task's classes.

Training runs through the engine: ``instance_task.MaskRCNNTask`` and ``MaskRCNNTrainer``.

Targets follow torchvision: label 0 is the background, FashionScenes class ``c`` is ``c + 1``,
masks are the *visible* part of each item (what a pixel shows), boxes their tight boxes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models import detection
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, masks_to_boxes
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ...data.scenes import SceneDataset
from ...errors import DataNotFoundError
from ...io.weights import load_state_dict_file, load_strict, torchvision_weights
from ...models import Backbone, create_model

TORCHVISION_MASK_RCNN = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
COCO_NUM_CLASSES = 91


class StageFPN(nn.Module):
    """A cnnkit backbone's stages through a feature pyramid, as torchvision detectors expect.

    Args:
        backbone: any cnnkit Backbone.
        out_channels: channels of every pyramid level.
        max_levels: use the deepest stage of each of the last ``max_levels`` strides.

    Shape:
        Tensor[N, C, H, W] -> OrderedDict ``'0'``, ``'1'``... (shallow to deep, each
        Tensor[N, out_channels, H / s, W / s]) and ``'pool'`` (one more halving).
    """

    def __init__(self, backbone: Backbone, out_channels: int = 64, max_levels: int = 3) -> None:
        super().__init__()
        by_stride = {info.stride: i for i, info in enumerate(backbone.feature_info)}
        self.strides = sorted(by_stride)[-max_levels:]
        self.indices = [by_stride[s] for s in self.strides]
        self.body = backbone
        self.fpn = FeaturePyramidNetwork(
            [backbone.feature_info[i].channels for i in self.indices],
            out_channels,
            extra_blocks=LastLevelMaxPool(),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        stages = self.body.forward_stages(x)
        return self.fpn(OrderedDict((str(k), stages[i]) for k, i in enumerate(self.indices)))


def build_mask_rcnn(
    model: str,
    num_classes: int,
    *,
    in_chans: int = 1,
    image_size: int = 64,
    weights: str | None = None,
    **model_kwargs: object,
) -> detection.MaskRCNN:
    """A Mask R-CNN for ``num_classes`` classes (background included).

    Args:
        model: a cnnkit model name (its stages become the FPN's inputs) or one of
            TORCHVISION_MASK_RCNN.
        num_classes: classes including background (FashionScenes: 11).
        in_chans: channels of the images (torchvision's architectures take 3; grayscale is
            repeated, see ``to_model_inputs``).
        image_size: side the images are resized to inside the model (min and max size).
        weights: torchvision architectures only: a local state dict file of the full COCO model,
            or a torchvision weights name (``'COCO_V1'``, ``'DEFAULT'``).
        **model_kwargs: options of the cnnkit backbone's builder.

    Raises:
        ValueError: unknown model, or weights for a cnnkit backbone.
        WeightsError: a weights file that does not fit the architecture.
        DataNotFoundError: a weights name that is not in torchvision's cache on this machine.
    """
    if model in TORCHVISION_MASK_RCNN:
        return _torchvision_mask_rcnn(model, num_classes, image_size, weights)
    if weights is not None:
        raise ValueError(
            f"weights={weights!r}: published Mask R-CNN weights exist only for "
            f"{TORCHVISION_MASK_RCNN}; a cnnkit backbone ({model}) starts from scratch"
        )
    backbone = create_model(model, num_classes=0, in_chans=in_chans, **model_kwargs)
    if not isinstance(backbone, Backbone):
        raise ValueError(f"{model} does not implement the Backbone interface")
    body = StageFPN(backbone)
    # One anchor size per level, 4× its stride; 2 levels of overlap cover 24-40 px items.
    sizes = tuple((4 * s,) for s in [*body.strides, 2 * body.strides[-1]])
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    names = [str(k) for k in range(len(body.strides))]
    # canonical scale/level put a box of 8 × (finest stride) pixels on the second level.
    level0 = int(math.log2(body.strides[0]))
    roi = {"featmap_names": names, "sampling_ratio": 2}
    roi_levels = {"canonical_scale": 8 * body.strides[0], "canonical_level": level0 + 1}
    # Slimmer than the paper's heads (4 × 256-channel mask convs, 1024-wide box MLP): the mask
    # head runs on every positive RoI and would cost more than the backbone on a CPU.
    mask_width, box_width = 64, 256
    net = detection.MaskRCNN(
        body,
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.0] * in_chans,
        image_std=[1.0] * in_chans,
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(output_size=7, **roi, **roi_levels),
        box_head=TwoMLPHead(body.out_channels * 7 * 7, box_width),
        box_predictor=FastRCNNPredictor(box_width, num_classes),
        mask_roi_pool=MultiScaleRoIAlign(output_size=14, **roi, **roi_levels),
        mask_head=MaskRCNNHeads(body.out_channels, (mask_width,) * 2, 1),
        mask_predictor=MaskRCNNPredictor(mask_width, mask_width, num_classes),
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=64,
        box_detections_per_img=20,
    )
    net.in_chans = in_chans  # type: ignore[assignment]
    return net


def _torchvision_mask_rcnn(
    model: str, num_classes: int, image_size: int, weights: str | None
) -> detection.MaskRCNN:
    builder = getattr(detection, model)
    net = builder(
        weights=None,
        weights_backbone=None,
        num_classes=COCO_NUM_CLASSES if weights is not None else num_classes,
        min_size=image_size,
        max_size=image_size,
    )
    if weights is not None:
        load_strict(net, _coco_state_dict(model, weights), source=str(weights))
        if num_classes != COCO_NUM_CLASSES:
            # New predictors for the task's classes; the rest keeps the COCO weights.
            box_in = net.roi_heads.box_predictor.cls_score.in_features
            net.roi_heads.box_predictor = FastRCNNPredictor(box_in, num_classes)
            mask_in = net.roi_heads.mask_predictor.conv5_mask.in_channels
            net.roi_heads.mask_predictor = MaskRCNNPredictor(mask_in, 256, num_classes)
    net.in_chans = 3  # type: ignore[assignment]
    return net


def _coco_state_dict(model: str, weights: str) -> dict[str, torch.Tensor]:
    path = Path(weights)
    if path.exists() or path.suffix in (".safetensors", ".pth", ".pt", ".bin"):
        return load_state_dict_file(path)
    entry = torchvision_weights(model, weights)
    try:
        return entry.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as exc:  # urllib's URLError is an OSError
        raise DataNotFoundError(
            f"{model} weights {weights!r} are not on this machine and could not be downloaded "
            f"({exc}); download {entry.url} elsewhere and pass the file's path"
        ) from None


def instance_targets(scenes: SceneDataset, i: int) -> dict[str, torch.Tensor]:
    """Image ``i``'s Mask R-CNN target.

    Returns:
        ``{"boxes": float Tensor[K, 4] (xyxy pixel edges), "labels": int64 Tensor[K] (class + 1),
        "masks": uint8 Tensor[K, H, W]}`` for the visible objects (fully covered ones dropped).
    """
    masks = scenes.instance_masks(i, visible=True)
    labels = scenes.target(i)["labels"] + 1
    keep = masks.flatten(1).any(1)
    masks, labels = masks[keep], labels[keep]
    boxes = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0]) if len(masks) else None
    return {
        "boxes": boxes if boxes is not None else torch.zeros(0, 4),
        "labels": labels,
        "masks": masks.to(torch.uint8),
    }


def to_model_inputs(images: torch.Tensor, in_chans: int, device: torch.device) -> list[torch.Tensor]:
    """uint8 Tensor[N, C, H, W] -> list of N float Tensor[in_chans, H, W] in [0, 1] on ``device``.

    Grayscale images are repeated to 3 channels for models that take colour.
    """
    x = images.to(device).float().div_(255.0)
    if x.shape[1] == 1 and in_chans == 3:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[1] != in_chans:
        raise ValueError(f"the model takes {in_chans}-channel images, got {x.shape[1]} channels")
    return list(x)


def __getattr__(name: str) -> object:
    # The task and trainer moved to instance_task (which imports this module); old imports work.
    if name in ("MaskRCNNTask", "MaskRCNNTrainer"):
        from . import instance_task

        return getattr(instance_task, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COCO_NUM_CLASSES",
    "TORCHVISION_MASK_RCNN",
    "StageFPN",
    "build_mask_rcnn",
    "instance_targets",
    "to_model_inputs",
]
