"""Run exported cnnkit models without PyTorch: ONNX Runtime, NumPy and Pillow only.

``OnnxModel("model.onnx")`` reads the preprocessing, class names and task that ``cnnkit export``
stored inside the file. Nothing here imports torch (a test imports it where importing torch
fails); cnnkit's package metadata still lists torch, so a deployment without it installs
``onnxruntime numpy pillow`` and cnnkit with ``pip install --no-deps``.
"""

from .boxes import box_iou, select_detections
from .metadata import METADATA_KEY, TASKS, read_metadata
from .onnx_model import OnnxModel, Prediction

__all__ = [
    "METADATA_KEY",
    "TASKS",
    "OnnxModel",
    "Prediction",
    "box_iou",
    "read_metadata",
    "select_detections",
]
