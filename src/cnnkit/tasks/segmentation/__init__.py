"""Semantic segmentation (FCN-32s/16s/8s and U-Net heads on any backbone) and instance
segmentation (torchvision's Mask R-CNN), with pixel losses, torchmetrics scores and run folders."""

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
from .losses import SegmentationLoss, soft_dice_loss
from .metrics import SegmentationMetrics
from .train import SegmentationTrainer

__all__ = [
    "FCN_HEADS",
    "HEADS",
    "BilinearConvTranspose2d",
    "FCNHead",
    "SegmentationLoss",
    "SegmentationMetrics",
    "SegmentationTrainer",
    "Segmenter",
    "UNetHead",
    "bilinear_kernel",
    "build_segmenter",
    "soft_dice_loss",
]
