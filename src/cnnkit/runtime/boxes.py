"""Box arithmetic and non-maximum suppression in NumPy, for predicting without PyTorch.

torchvision.ops does this in cnnkit's own models; a deployment of an exported detector has no
torch, so the selection (:func:`select_with`) is written once over a small table of array
operations: NumPy's here, torch's in ``cnnkit.tasks.detection.model``. The export parity check
compares the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``xyxy`` boxes a [N, 4] and b [M, 4]: [N, M]."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, np.finfo(np.float32).tiny)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept, best first: a box is dropped when it overlaps a better kept one
    by more than ``iou_threshold`` (torchvision.ops.nms's rule)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        if order.size:
            order = order[box_iou(boxes[best][None], boxes[order])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """:func:`nms` within each label; the kept indices sorted by score, best first."""
    keep = [np.flatnonzero(labels == c)[nms(boxes[labels == c], scores[labels == c], iou_threshold)]
            for c in np.unique(labels)]  # fmt: skip
    kept = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return kept[np.argsort(-scores[kept], kind="stable")]


@dataclass(frozen=True)
class DetectionOptions:
    """How one image's anchor predictions become detections, for torch and NumPy alike.

    Attributes:
        score_threshold: drop candidates scoring lower.
        nms_iou: IoU above which the lower-scoring box is suppressed (torchvision's NMS rule).
        max_detections: most boxes kept per image.
        pre_nms_top_k: most candidates per image going into NMS.
        class_agnostic: keep only the best class per anchor and suppress across classes (one
            box per object, for display); otherwise every (anchor, class) pair above the
            threshold is a candidate, as COCO evaluation expects.
    """

    score_threshold: float = 0.001
    nms_iou: float = 0.5
    max_detections: int = 100
    pre_nms_top_k: int = 1000
    class_agnostic: bool = False


@dataclass(frozen=True)
class ArrayOps:
    """The array operations the selection needs, from one array library (NumPy or torch).

    Attributes:
        best: scores [K, C] -> (best score [K], its class [K]).
        nonzero: a boolean array -> a tuple of index arrays, one per dimension.
        top_k: scores [N], k -> the indices of the k highest, highest first.
        sized: boxes [N, 4] -> which boxes have both sides of at least 1e-3 (a mask or indices).
        nms: (boxes, scores, iou) -> kept indices, best first.
        batched_nms: (boxes, scores, labels, iou) -> kept indices within each label, best first.
    """

    best: Callable[[Any], tuple[Any, Any]]
    nonzero: Callable[[Any], tuple[Any, ...]]
    top_k: Callable[[Any, int], Any]
    sized: Callable[[Any], Any]
    nms: Callable[..., Any]
    batched_nms: Callable[..., Any]


def select_with(ops: ArrayOps, boxes: Any, scores: Any, options: DetectionOptions) -> dict[str, Any]:
    """One image's detections from every anchor's box and class scores, with ``ops``' arrays.

    Args:
        ops: NumPy's (:data:`NUMPY_OPS`) or torch's operations.
        boxes: [K, 4] ``xyxy`` boxes (clipped to the image).
        scores: [K, C] sigmoid(objectness) × softmax(class logits).
        options: thresholds and limits.

    Returns:
        ``{"boxes": [D, 4], "scores": [D], "labels": [D]}``, best first.
    """
    if options.class_agnostic:
        best, labels = ops.best(scores)
        (anchor,) = ops.nonzero(best > options.score_threshold)
        cand_scores, cand_labels = best[anchor], labels[anchor]
    else:
        anchor, cand_labels = ops.nonzero(scores > options.score_threshold)
        cand_scores = scores[anchor, cand_labels]
    if len(cand_scores) > options.pre_nms_top_k:
        top = ops.top_k(cand_scores, options.pre_nms_top_k)
        cand_scores, cand_labels, anchor = cand_scores[top], cand_labels[top], anchor[top]
    cand_boxes = boxes[anchor]
    valid = ops.sized(cand_boxes)  # boxes clipped to nothing at the border are not detections
    cand_boxes, cand_scores, cand_labels = cand_boxes[valid], cand_scores[valid], cand_labels[valid]
    if options.class_agnostic:
        keep = ops.nms(cand_boxes, cand_scores, options.nms_iou)
    else:
        keep = ops.batched_nms(cand_boxes, cand_scores, cand_labels, options.nms_iou)
    keep = keep[: options.max_detections]
    return {"boxes": cand_boxes[keep], "scores": cand_scores[keep], "labels": cand_labels[keep]}


NUMPY_OPS = ArrayOps(
    best=lambda scores: (scores.max(-1), scores.argmax(-1)),
    nonzero=np.nonzero,
    top_k=lambda scores, k: np.argsort(-scores, kind="stable")[:k],
    sized=lambda boxes: ((boxes[:, 2:] - boxes[:, :2]) >= 1e-3).all(-1),
    nms=nms,
    batched_nms=batched_nms,
)


def select_detections(boxes: np.ndarray, scores: np.ndarray, **options: Any) -> dict[str, np.ndarray]:
    """One image's detections from every anchor's box and class scores, in NumPy.

    Args:
        boxes: [K, 4] ``xyxy`` boxes (clipped to the image).
        scores: [K, C] sigmoid(objectness) × softmax(class logits).
        options: :class:`DetectionOptions` fields (``score_threshold``, ``nms_iou``,
            ``max_detections``, ``pre_nms_top_k``, ``class_agnostic``).

    Returns:
        ``{"boxes": [D, 4], "scores": [D], "labels": [D]}``, best first.
    """
    return select_with(NUMPY_OPS, boxes, scores, DetectionOptions(**options))
