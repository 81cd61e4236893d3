"""Semantic segmentation (FCN-32s/16s/8s and U-Net heads on any backbone) and instance
segmentation (torchvision's Mask R-CNN), with pixel losses and torchmetrics scores, trained
through the engine. Run folders of these models: ``cnnkit.runs.segment``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

if TYPE_CHECKING:
    from .heads import (
        FCN_HEADS,
        HEADS,
        BilinearConvTranspose2d,
        FCNHead,
        Segmenter,
        UNetHead,
        bilinear_kernel,
        build_segmenter,
    )
    from .instance_task import MaskRCNNTask, MaskRCNNTrainer
    from .losses import SegmentationLoss, soft_dice_loss
    from .metrics import SegmentationMetrics
    from .task import SegmentTask
    from .train import SegmentationTrainer

# Loaded on first use: importing the package (say, for its data helpers) does not pay for
# torchvision, torchmetrics and the models.
_EXPORTS = {
    "FCN_HEADS": ".heads",
    "HEADS": ".heads",
    "BilinearConvTranspose2d": ".heads",
    "FCNHead": ".heads",
    "Segmenter": ".heads",
    "UNetHead": ".heads",
    "bilinear_kernel": ".heads",
    "build_segmenter": ".heads",
    "MaskRCNNTask": ".instance_task",
    "MaskRCNNTrainer": ".instance_task",
    "SegmentTask": ".task",
    "SegmentationLoss": ".losses",
    "soft_dice_loss": ".losses",
    "SegmentationMetrics": ".metrics",
    "SegmentationTrainer": ".train",
}

__all__ = [
    "BilinearConvTranspose2d",
    "FCNHead",
    "FCN_HEADS",
    "HEADS",
    "MaskRCNNTask",
    "MaskRCNNTrainer",
    "SegmentTask",
    "SegmentationLoss",
    "SegmentationMetrics",
    "SegmentationTrainer",
    "Segmenter",
    "UNetHead",
    "bilinear_kernel",
    "build_segmenter",
    "soft_dice_loss",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
