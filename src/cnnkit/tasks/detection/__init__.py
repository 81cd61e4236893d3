"""Object detection: a YOLO-style single-stage detector on any cnnkit backbone (Géron 14.9)."""

from __future__ import annotations

from .anchors import anchor_fit, kmeans_anchors, shape_iou, split_by_level
from .coder import decode, encode
from .loss import YoloLoss, assign_targets
from .metrics import mean_average_precision
from .model import YoloDetector
from .task import DetectTask
from .train import evaluate_detector, fit_detector, predict_detector

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
