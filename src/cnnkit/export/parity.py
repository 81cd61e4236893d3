"""The parity check of an export: the exported model against PyTorch on the same real inputs.

Float exports must match closely: max abs difference of every output ≤ 1e-4 and the same
decision on ≥ 99.9 % of the images (top-1 class; localization: class and box at IoU ≥ 0.99;
detection: the boxes after NMS matched one to one with the same class at IoU ≥ 0.99, a box that
one side kept on a near-tie of scores (within 1e-4) counting as agreeing; segmentation:
the class of each pixel). Int8 exports change outputs by design: only the decisions are held,
to ≥ 97 % agreement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..runtime.boxes import DetectionOptions, box_iou
from ..runtime.boxes import select_detections as select_np
from .source import ExportSource

FLOAT_TOLERANCE = {"max_abs_diff": 1e-4, "agreement": 0.999}
INT8_TOLERANCE = {"max_abs_diff": None, "agreement": 0.97}
MATCH_IOU = 0.99
# Detection scores closer than this are a tie that float rounding may break either way.
SCORE_TIE = 1e-4
DECISIONS = {
    "classify": "top-1 class",
    "localize": "class and box (IoU >= 0.99)",
    "detect": "boxes after NMS (same class, IoU >= 0.99)",
    "segment": "pixel classes",
}


@dataclass
class ParityReport:
    """How an exported model compares with PyTorch.

    Attributes:
        images: inputs compared.
        max_abs_diff: largest absolute difference over all outputs.
        agreement: share of decisions that agree (see ``DECISIONS``).
        tolerance: ``{"max_abs_diff": float | None, "agreement": float}`` held.
        decisions: decisions compared (images; detection: boxes; segmentation: pixels).
        accuracy: classification with labels: ``{"pytorch": float, "exported": float}``.
    """

    task: str
    images: int
    max_abs_diff: float
    agreement: float
    tolerance: dict[str, Any]
    decisions: int
    accuracy: dict[str, float] | None = None

    @property
    def passed(self) -> bool:
        limit = self.tolerance["max_abs_diff"]
        diff_ok = limit is None or self.max_abs_diff <= limit
        return diff_ok and self.agreement >= self.tolerance["agreement"]

    def line(self) -> str:
        limit = self.tolerance["max_abs_diff"]
        diff = f"max abs diff {self.max_abs_diff:.2e}" + (f" (<= {limit:g})" if limit is not None else "")
        held = 100 * self.tolerance["agreement"]
        agree = f"{DECISIONS[self.task]} agree on {100 * self.agreement:.2f} % (>= {held:g} %)"
        if self.task == "detect":
            agree += f" of {self.decisions:,} boxes"
        acc = ""
        if self.accuracy:
            acc = (
                f"; accuracy {self.accuracy['exported']:.4f} exported, {self.accuracy['pytorch']:.4f} PyTorch"
            )
        return f"parity on {self.images:,} test images: {diff}, {agree}{acc}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "max_abs_diff": self.max_abs_diff,
            "agreement": self.agreement,
            "decision": DECISIONS[self.task],
            "tolerance": self.tolerance,
            "decisions": self.decisions,
            "accuracy": self.accuracy,
            "passed": self.passed,
        }


def _batches(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def check_parity(
    source: ExportSource,
    run_exported: Callable[[np.ndarray], list[np.ndarray]],
    *,
    int8: bool = False,
    batch_size: int = 64,
) -> ParityReport:
    """Run ``source.graph`` (PyTorch) and ``run_exported`` (float32 [N, C, H, W] -> the outputs in
    the metadata's order) on the source's test images and compare."""
    x = source.inputs()
    ours: list[list[np.ndarray]] = []
    theirs: list[list[np.ndarray]] = []
    reference: list[dict[str, torch.Tensor]] = []
    with torch.inference_mode():
        for batch in _batches(x, batch_size):
            ours.append([t.float().numpy() for t in source.graph(batch)])
            theirs.append([np.asarray(t) for t in run_exported(batch.numpy())])
            if source.task == "detect":
                reference.extend(source.model.predict(batch))
    torch_out = [np.concatenate([b[k] for b in ours]) for k in range(len(ours[0]))]
    exported = [np.concatenate([b[k] for b in theirs]) for k in range(len(theirs[0]))]
    if [a.shape for a in torch_out] != [b.shape for b in exported]:
        shapes = [b.shape for b in exported], [a.shape for a in torch_out]
        raise RuntimeError(f"the exported model's outputs are {shapes[0]}, PyTorch's {shapes[1]}")
    diff = max(float(np.abs(a - b).max()) if a.size else 0.0 for a, b in zip(torch_out, exported))
    try:
        agreement, decisions = _agreement(source.task, torch_out, exported, reference)
    except (IndexError, ValueError) as exc:  # numpy's AxisError is both
        shapes = [a.shape for a in torch_out]
        raise RuntimeError(f"outputs of shapes {shapes} are not a {source.task} model's ({exc})") from None
    accuracy = None
    if source.labels is not None and source.task == "classify":
        labels = source.labels.numpy()[: len(x)]
        accuracy = {
            "pytorch": float((torch_out[0].argmax(1) == labels).mean()),
            "exported": float((exported[0].argmax(1) == labels).mean()),
        }
    tolerance = INT8_TOLERANCE if int8 else FLOAT_TOLERANCE
    return ParityReport(source.task, len(x), diff, agreement, dict(tolerance), decisions, accuracy)


def _agreement(
    task: str, ours: list[np.ndarray], theirs: list[np.ndarray], reference: list[dict[str, torch.Tensor]]
) -> tuple[float, int]:
    """(share of decisions that agree, decisions compared)."""
    if task in ("classify", "segment"):
        same = ours[0].argmax(1) == theirs[0].argmax(1)
        return float(same.mean()), int(same.size)
    if task == "localize":
        same_class = ours[0].argmax(1) == theirs[0].argmax(1)
        iou = np.diagonal(box_iou(ours[1].astype(np.float64), theirs[1].astype(np.float64)))
        same_box = (iou >= MATCH_IOU) | np.all(ours[1] == theirs[1], axis=1)
        return float((same_class & same_box).mean()), int(same_class.size)
    matched = total = 0
    for b, ref in enumerate(reference):
        det = select_np(theirs[0][b], theirs[1][b])  # YoloDetector.predict's defaults
        ref_np = {key: ref[key].numpy() for key in ("boxes", "scores", "labels")}
        matched_a, matched_b = _match(ref_np["boxes"], ref_np["labels"], det["boxes"], det["labels"])
        # A box kept on one side only counts against parity unless it is a near-tie there.
        excused = max(_near_ties(ref_np, ~matched_a, det), _near_ties(det, ~matched_b, ref_np))
        size = max(len(ref_np["boxes"]), len(det["boxes"]))
        matched += min(size, int(matched_a.sum()) + excused)
        total += size
    return (1.0 if total == 0 else matched / total), total


def _match(
    boxes_a: np.ndarray, labels_a: np.ndarray, boxes_b: np.ndarray, labels_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which detections of a and of b are matched one to one: same label, IoU >= MATCH_IOU (greedy)."""
    used_a = np.zeros(len(boxes_a), dtype=bool)
    used_b = np.zeros(len(boxes_b), dtype=bool)
    if not len(boxes_a) or not len(boxes_b):
        return used_a, used_b
    iou = box_iou(boxes_a.astype(np.float64), boxes_b.astype(np.float64))
    iou[labels_a[:, None] != labels_b[None, :]] = 0.0
    for i in range(len(boxes_a)):
        candidates = np.where(~used_b & (iou[i] >= MATCH_IOU))[0]
        if candidates.size:
            used_b[candidates[np.argmax(iou[i, candidates])]] = True
            used_a[i] = True
    return used_a, used_b


def _near_ties(side: dict[str, np.ndarray], unmatched: np.ndarray, other: dict[str, np.ndarray]) -> int:
    """How many of ``side``'s unmatched boxes the other side left out on a near-tie: a score within
    SCORE_TIE of the score threshold, of the other side's last box when it holds the most boxes
    kept, or of a box of the same class it kept in its place (IoU above the NMS threshold). Outputs
    that differ by float rounding flip such decisions (a briefly trained detector has many)."""
    options = DetectionOptions()
    count = 0
    boxes, scores, labels = (side[key][unmatched] for key in ("boxes", "scores", "labels"))
    for box, score, label in zip(boxes, scores, labels):
        if score <= options.score_threshold + SCORE_TIE:
            count += 1
            continue
        kept = other["scores"]
        if len(kept) >= options.max_detections and score <= kept.min() + SCORE_TIE:
            count += 1
            continue
        same = other["labels"] == label
        if same.any():
            iou = box_iou(box[None].astype(np.float64), other["boxes"][same].astype(np.float64))[0]
            if np.any((iou > options.nms_iou) & (np.abs(kept[same] - score) <= SCORE_TIE)):
                count += 1
    return count
