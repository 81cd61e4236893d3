"""What localization, detection and segmentation runs show, in the uploaded photo's own pixels.

The models run on the photo as the preprocessing made it (stretched, cropped or letterboxed to
the run's canvas); their boxes and masks are mapped back through that resize
(:meth:`~cnnkit.data.preprocess.Preprocess.frame`) so that the page draws them on the photo as
it was uploaded. Masks travel run-length encoded (``rle``): a few kB even for a large photo.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .catalog import Entry
from .inputs import Input

__all__ = ["SCENE_TASKS", "Frame", "rle", "scene_view"]

SCENE_TASKS = ("localize", "detect", "segment")
DETECT_FLOOR = 0.001  # detection boxes sent (the page's slider hides those below its threshold)
MASK_THRESHOLD = 0.5  # a pixel belongs to a Mask R-CNN instance above this probability (as torchvision)


def rle(values: np.ndarray) -> dict[str, Any]:
    """A 2-D uint8 array as runs of equal values in row-major order: ``values`` (one byte a run)
    and ``runs`` (their lengths, little-endian uint32), both base64."""
    flat = np.ascontiguousarray(values, dtype=np.uint8).ravel()
    if flat.size == 0:
        starts = np.zeros(0, dtype=np.int64)
    else:
        starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    lengths = np.diff(np.append(starts, flat.size)).astype("<u4")
    return {
        "shape": list(values.shape),
        "values": base64.b64encode(flat[starts].tobytes()).decode(),
        "runs": base64.b64encode(lengths.tobytes()).decode(),
    }


def _axis(n_out: int, n_in: int, start: float, step: float, bilinear: bool) -> np.ndarray:
    """Interpolation weights [n_out, n_in] from canvas pixels to the photo pixels of one axis.

    Photo pixel ``i`` has its centre at canvas coordinate ``(i + 0.5 - start) / step``; weights
    follow PyTorch's ``interpolate`` (``align_corners=False``; nearest is ``"nearest-exact"``).
    Photo pixels outside the canvas (letterbox margins cut off, crop) get no weight.
    """
    centre = (np.arange(n_out) + 0.5 - start) / step
    inside = (centre >= 0) & (centre < n_in)
    weights = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if not bilinear:
        weights[rows, np.clip(np.floor(centre), 0, n_in - 1).astype(int)] = 1.0
    else:
        src = np.maximum(centre - 0.5, 0.0)
        low = np.minimum(np.floor(src), n_in - 1).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        frac = src - low
        np.add.at(weights, (rows, low), 1.0 - frac)
        np.add.at(weights, (rows, high), frac)
    weights[~inside] = 0.0
    return weights


@dataclass(frozen=True)
class Frame:
    """How the model's canvas lies on the uploaded photo.

    Attributes:
        height, width: the photo's size, as uploaded.
        canvas: (height, width) of the model's input.
        left, top, scale_x, scale_y: canvas point (x, y) is photo point
            (left + x * scale_x, top + y * scale_y).
    """

    height: int
    width: int
    canvas: tuple[int, int]
    left: float
    top: float
    scale_x: float
    scale_y: float

    @classmethod
    def of(cls, entry: Entry, item: Input) -> Frame:
        height, width = item.size
        left, top, sx, sy = entry.preprocess.frame(height, width)
        return cls(height, width, tuple(entry.preprocess.size), left, top, sx, sy)  # type: ignore[arg-type]

    def boxes(self, boxes: torch.Tensor) -> list[list[float]]:
        """Boxes Tensor[N, 4] ``xyxy`` in canvas pixels -> photo pixels (clipped to the photo)."""
        scale = boxes.new_tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        shift = boxes.new_tensor([self.left, self.top, self.left, self.top])
        bound = boxes.new_tensor([self.width, self.height, self.width, self.height])
        return (boxes.float() * scale + shift).clamp(min=0).minimum(bound).tolist()

    def weights(self, bilinear: bool) -> tuple[np.ndarray, np.ndarray]:
        """(rows [height, canvas height], columns [width, canvas width]) interpolation weights."""
        h, w = self.canvas
        return (
            _axis(self.height, h, self.top, self.scale_y, bilinear),
            _axis(self.width, w, self.left, self.scale_x, bilinear),
        )

    def labels(self, labels: np.ndarray) -> np.ndarray:
        """A canvas label map [h, w] -> the photo's [height, width] (nearest; 0 outside the canvas)."""
        rows, cols = self.weights(bilinear=False)
        r, c = rows.argmax(1), cols.argmax(1)
        out = labels[r][:, c]
        out[~rows.any(1)] = 0
        out[:, ~cols.any(1)] = 0
        return out

    def mask(self, probs: np.ndarray, threshold: float = MASK_THRESHOLD) -> dict[str, Any] | None:
        """A canvas probability map [h, w] -> the photo pixels above ``threshold`` (bilinear, as
        ``F.interpolate`` to the photo's size), as the box ``[x0, y0, x1, y1]`` that holds them
        and its run-length encoded 0/1 grid; None if no pixel is above it."""
        above = probs > threshold
        if not above.any():
            return None
        rows, cols = self.weights(bilinear=True)
        # A photo pixel is a convex mix of canvas pixels: above the threshold only next to one that is.
        r = np.flatnonzero((rows[:, above.any(1)] > 0).any(1))
        c = np.flatnonzero((cols[:, above.any(0)] > 0).any(1))
        if not len(r) or not len(c):
            return None
        y0, y1, x0, x1 = int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1
        grid = rows[y0:y1] @ probs.astype(np.float64) @ cols[x0:x1].T
        return {"box": [x0, y0, x1, y1], **rle(grid > threshold)}


def _uint8(item: Input) -> torch.Tensor:
    """The input as uint8 Tensor[1, C, H, W], as the scene tasks' own predict functions take it."""
    return torch.from_numpy(item.pixels.transpose(2, 0, 1).copy())[None]


def _found(
    entry: Entry, frame: Frame, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor
) -> list[dict[str, Any]]:
    return [
        {"box": box, "score": float(score), "index": int(label), "class": entry.classes[int(label)]}
        for box, score, label in zip(frame.boxes(boxes), scores, labels)
    ]


def _localization(entry: Entry, item: Input, frame: Frame) -> list[dict[str, Any]]:
    """The one box and class of a localization run, as `cnnkit detect` gives them (no flip TTA)."""
    from ..tasks.localization.train import predict_localizer

    with entry.busy(), torch.inference_mode():
        labels, scores, boxes = predict_localizer(
            entry.model, _uint8(item), torch.device("cpu"), flip_tta=False
        )
    h, w = frame.canvas
    return _found(entry, frame, boxes * boxes.new_tensor([w, h, w, h]), scores, labels)


def _detections(entry: Entry, item: Input, frame: Frame) -> list[dict[str, Any]]:
    """A detection run's boxes scoring ``DETECT_FLOOR`` or more, one class per box, after
    non-maximum suppression as `cnnkit detect` keeps them."""
    from ..tasks.detection.train import predict_detector

    with entry.busy(), torch.inference_mode():
        (found,) = predict_detector(
            entry.model, _uint8(item), torch.device("cpu"), score_threshold=DETECT_FLOOR, nms_iou=0.5,
            class_agnostic=True,
        )  # fmt: skip
    return _found(entry, frame, found["boxes"], found["scores"], found["labels"])


def _instances(entry: Entry, item: Input, frame: Frame) -> list[dict[str, Any]]:
    """A Mask R-CNN run's instances (torchvision keeps those scoring 0.05 or more): box, class,
    score and mask, as `cnnkit segment` computes them."""
    from ..tasks.segmentation.instance import to_model_inputs

    in_chans = int(getattr(entry.model, "in_chans", entry.input_shape[0]))
    with entry.busy(), torch.inference_mode():
        (found,) = entry.model(to_model_inputs(_uint8(item), in_chans, torch.device("cpu")))
    out = _found(entry, frame, found["boxes"], found["scores"], found["labels"])
    for row, probs in zip(out, found["masks"][:, 0].float().numpy()):
        row["mask"] = frame.mask(probs)
    return out


def _segmentation(entry: Entry, item: Input, frame: Frame) -> dict[str, Any]:
    """A semantic segmentation run's class of every photo pixel (the model's classes on the
    canvas, nearest) and each class's share of the photo."""
    with entry.busy(), torch.inference_mode():
        logits = entry.model(item.tensor)[0]
    labels = frame.labels(logits.argmax(0).to(torch.uint8).numpy())  # one byte a pixel: up to 256 classes
    counts = np.bincount(labels.ravel(), minlength=len(entry.classes)).tolist()
    shares = [(i, n / labels.size) for i, n in enumerate(counts) if n]
    return {
        "labels": rle(labels),
        "classes": [{"index": i, "class": entry.classes[i], "share": share} for i, share in shares],
    }


def scene_view(entry: Entry, item: Input) -> dict[str, Any]:
    """What the page draws on the photo for a localization, detection or segmentation run."""
    frame = Frame.of(entry, item)
    result: dict[str, Any] = {"image": {"height": frame.height, "width": frame.width}}
    if entry.task == "localize":
        result["detections"] = _localization(entry, item, frame)
    elif entry.task == "detect":
        result["detections"] = _detections(entry, item, frame)
    elif entry.instance:
        result["detections"] = _instances(entry, item, frame)
    else:
        result["segmentation"] = _segmentation(entry, item, frame)
    return result
