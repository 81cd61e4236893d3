"""Localization loss: cross-entropy for the class plus a selectable box loss."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .model import LocalizationOutput


BOX_LOSSES = ("mse", "smooth_l1", "giou")
# Box coordinates are fractions of the image, so MSE / smooth-L1 values are ~100x smaller
# than the cross-entropy; these weights put the two terms on the same footing.
DEFAULT_BOX_WEIGHT = {"mse": 20.0, "smooth_l1": 20.0, "giou": 2.0}
# Smooth-L1 switches from quadratic to linear at 2 % of the image side.
SMOOTH_L1_BETA = 0.02


def check_box_loss(name: str) -> str:
    if name not in BOX_LOSSES:
        raise ValueError(f"box loss must be one of {BOX_LOSSES}, got {name!r}")
    return name


def box_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "giou") -> torch.Tensor:
    """Mean box loss.

    Args:
        pred: Tensor[N, 4] ``xyxy`` boxes.
        target: Tensor[N, 4] ``xyxy`` boxes.
        kind: ``'mse'``, ``'smooth_l1'`` or ``'giou'`` (torchvision's generalized IoU loss).
    """
    check_box_loss(kind)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=SMOOTH_L1_BETA)
    from torchvision.ops import generalized_box_iou_loss  # here: `cnnkit train --help` stays fast

    return generalized_box_iou_loss(pred, target, reduction="mean")


def localization_loss(
    output: LocalizationOutput,
    labels: torch.Tensor,
    boxes: torch.Tensor,
    kind: str = "giou",
    box_weight: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy + ``box_weight`` × box loss.

    Args:
        output: the model's logits Tensor[N, C] and boxes Tensor[N, 4] (normalised ``xyxy``).
        labels: Tensor[N] class indices.
        boxes: Tensor[N, 4] normalised ``xyxy`` targets.
        kind: box loss name (see BOX_LOSSES).
        box_weight: weight of the box term; None takes DEFAULT_BOX_WEIGHT[kind].

    Returns:
        (total loss, {"class_loss", "box_loss"} as floats for logging).
    """
    cls = F.cross_entropy(output.logits, labels)
    box = box_loss(output.boxes, boxes, kind)
    weight = DEFAULT_BOX_WEIGHT[kind] if box_weight is None else box_weight
    return cls + weight * box, {"class_loss": float(cls.detach()), "box_loss": float(box.detach())}


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of each box with its partner: Tensor[N, 4], Tensor[N, 4] -> Tensor[N].

    Uses torchvision's ``box_iou`` (N × N) and keeps the diagonal; callers pass batches.
    """
    from torchvision.ops import box_iou

    return box_iou(a, b).diagonal()
