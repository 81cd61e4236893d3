"""Semantic segmentation (FCN-32s/16s/8s and U-Net heads on any backbone) and instance
segmentation (torchvision's Mask R-CNN), with pixel losses and torchmetrics scores, trained
through the engine. Run folders of these models: ``cnnkit.runs.segment``."""

from __future__ import annotations

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
from .loss import SegmentationLoss, soft_dice_loss
from .metrics import SegmentationMetrics
from .task import SegmentTask
from .train import SegmentationTrainer

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
