"""Box arithmetic and non-maximum suppression in NumPy, for predicting without PyTorch.

torchvision.ops does this in cnnkit's own models; a deployment of an exported detector has no
torch, so the same selection (``cnnkit.tasks.detection.model.select_detections``) is written
here for NumPy arrays. The export parity check compares the two.
"""

from __future__ import annotations

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


def select_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    score_threshold: float = 0.001,
    nms_iou: float = 0.5,
    max_detections: int = 100,
    pre_nms_top_k: int = 1000,
    class_agnostic: bool = False,
) -> dict[str, np.ndarray]:
    """One image's detections from every anchor's box and class scores.

    Args:
        boxes: [K, 4] ``xyxy`` boxes (clipped to the image).
        scores: [K, C] sigmoid(objectness) × softmax(class logits).
        score_threshold, nms_iou, max_detections, pre_nms_top_k, class_agnostic: as
            ``cnnkit.tasks.detection.model.select_detections``.

    Returns:
        ``{"boxes": [D, 4], "scores": [D], "labels": [D]}``, best first.
    """
    if class_agnostic:
        labels = scores.argmax(-1)
        best = scores.max(-1)
        anchor = np.flatnonzero(best > score_threshold)
        cand_scores, cand_labels = best[anchor], labels[anchor]
    else:
        anchor, cand_labels = np.nonzero(scores > score_threshold)
        cand_scores = scores[anchor, cand_labels]
    if len(cand_scores) > pre_nms_top_k:
        top = np.argsort(-cand_scores, kind="stable")[:pre_nms_top_k]
        cand_scores, cand_labels, anchor = cand_scores[top], cand_labels[top], anchor[top]
    cand_boxes = boxes[anchor]
    sides = cand_boxes[:, 2:] - cand_boxes[:, :2]
    valid = (sides >= 1e-3).all(-1)  # boxes clipped to nothing at the border are not detections
    cand_boxes, cand_scores, cand_labels = cand_boxes[valid], cand_scores[valid], cand_labels[valid]
    if class_agnostic:
        keep = nms(cand_boxes, cand_scores, nms_iou)
    else:
        keep = batched_nms(cand_boxes, cand_scores, cand_labels, nms_iou)
    keep = keep[:max_detections]
    return {"boxes": cand_boxes[keep], "scores": cand_scores[keep], "labels": cand_labels[keep]}
