"""Pixel losses: cross-entropy with an ignore index, and an optional soft Dice term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...data.masks import IGNORE_INDEX


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX, eps: float = 1.0
) -> torch.Tensor:
    """``1 - mean Dice`` of the softmax probabilities over the classes present in the batch.

    Dice of class k is ``2 Σ p_k t_k / (Σ p_k + Σ t_k)`` over the batch's non-ignored pixels
    (Milletari et al. 2016); classes absent from the target are left out, so a batch without
    some class is not rewarded for predicting none of it. torchmetrics has Dice only as a metric
    (no gradient), hence this loss.

    Args:
        logits: Tensor[N, K, H, W].
        target: int Tensor[N, H, W], class indices or ``ignore_index``.
        ignore_index: target value of pixels that do not count.
        eps: smoothing added to numerator and denominator.

    Returns:
        Scalar Tensor in [0, 1].
    """
    num_classes = logits.shape[1]
    valid = target != ignore_index
    probs = logits.float().softmax(dim=1) * valid.unsqueeze(1)
    onehot = F.one_hot(torch.where(valid, target, 0).long(), num_classes).permute(0, 3, 1, 2)
    onehot = onehot.to(probs.dtype) * valid.unsqueeze(1)
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    sizes = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2 * inter + eps) / (sizes + eps)
    present = onehot.sum(dim=(0, 2, 3)) > 0
    if not bool(present.any()):
        return logits.sum() * 0.0  # every pixel ignored: no signal, but keep the graph
    return 1.0 - dice[present].mean()


class SegmentationLoss(nn.Module):
    """Pixel cross-entropy (ignoring ``ignore_index``) plus ``dice_weight`` × soft Dice loss.

    Args:
        dice_weight: weight of the Dice term (0: cross-entropy only).
        ignore_index: target value of pixels that do not count.

    Shape:
        logits Tensor[N, K, H, W], target int Tensor[N, H, W] -> scalar.
    """

    def __init__(self, dice_weight: float = 0.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not dice_weight >= 0:
            raise ValueError(f"dice_weight must be >= 0, got {dice_weight!r}")
        self.dice_weight = float(dice_weight)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        loss = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index)
        if torch.isnan(loss):  # every pixel ignored: cross_entropy divides by zero
            loss = logits.sum() * 0.0
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.ignore_index)
        return loss
