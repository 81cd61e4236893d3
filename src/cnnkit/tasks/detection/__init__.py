"""Object detection: a YOLO-style single-stage detector on any cnnkit backbone (Géron 14.9)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

if TYPE_CHECKING:
    from .anchors import anchor_fit, kmeans_anchors, shape_iou, split_by_level
    from .coder import decode, encode
    from .loss import YoloLoss, assign_targets
    from .metrics import mean_average_precision
    from .model import YoloDetector
    from .task import DetectTask
    from .train import evaluate_detector, fit_detector, predict_detector

# Loaded on first use: importing the package (the CLI's parsers do) pays for no torchvision,
# torchmetrics or models.
_EXPORTS = {
    "anchor_fit": ".anchors",
    "kmeans_anchors": ".anchors",
    "shape_iou": ".anchors",
    "split_by_level": ".anchors",
    "decode": ".coder",
    "encode": ".coder",
    "YoloLoss": ".loss",
    "assign_targets": ".loss",
    "mean_average_precision": ".metrics",
    "YoloDetector": ".model",
    "DetectTask": ".task",
    "evaluate_detector": ".train",
    "fit_detector": ".train",
    "predict_detector": ".train",
}

__all__ = [
    "DetectTask",
    "YoloDetector",
    "YoloLoss",
    "anchor_fit",
    "assign_targets",
    "decode",
    "encode",
    "evaluate_detector",
    "fit_detector",
    "kmeans_anchors",
    "mean_average_precision",
    "predict_detector",
    "shape_iou",
    "split_by_level",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
