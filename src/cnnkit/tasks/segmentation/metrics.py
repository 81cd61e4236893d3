"""Segmentation metrics from torchmetrics: pixel accuracy, per-class IoU, mIoU, confusion."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassJaccardIndex,
)

from ...data.masks import IGNORE_INDEX


class SegmentationMetrics:
    """Accumulates predictions over batches; ``compute()`` gives the scores.

    - pixel accuracy: correct / counted pixels (ignored pixels are not counted);
    - mean accuracy: per-class recall averaged over classes (FCN's "mean accuracy");
    - per-class IoU: ``TP / (TP + FP + FN)`` over the whole set, ``None`` for a class that
      appears neither in the targets nor in the predictions;
    - mIoU: the mean of the defined per-class IoUs (background included, as in Long et al.).

    Args:
        num_classes: classes including background.
        class_names: names for the per-class table (default ``"0"``, ``"1"``...).
        ignore_index: target value of pixels that do not count.
        device: where the running counts live (that of the predictions).
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
        device: torch.device | str | None = None,
    ) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = list(class_names or [str(k) for k in range(num_classes)])
        # No implicit sync in compute(): sum_across_ranks() says when the ranks' counts add up.
        common = {"num_classes": num_classes, "ignore_index": ignore_index, "sync_on_compute": False}
        self.iou = MulticlassJaccardIndex(average=None, zero_division=math.nan, **common)
        self.pixel_accuracy = MulticlassAccuracy(average="micro", **common)
        self.mean_accuracy = MulticlassAccuracy(average="macro", **common)
        self.confusion = MulticlassConfusionMatrix(**common)
        self._metrics = (self.iou, self.pixel_accuracy, self.mean_accuracy, self.confusion)
        if device is not None:
            for metric in self._metrics:
                metric.to(device)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        Args:
            preds: int Tensor[N, H, W] of predicted classes, or logits Tensor[N, K, H, W].
            target: int Tensor[N, H, W] of true classes (or ``ignore_index``).
        """
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(dim=1)
        preds, target = preds.long(), target.long()
        for metric in self._metrics:
            metric.update(preds, target)

    def sum_across_ranks(self) -> None:
        """Add up the counts of every rank of a process group (each rank updated with its share
        of the images): ``compute()`` then scores the whole set. Every rank must call it."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for metric in self._metrics:
                metric.sync(should_sync=True)

    def reset(self) -> None:
        for metric in self._metrics:
            metric.reset()

    def compute(self) -> dict[str, Any]:
        """Scores as plain Python values (JSON-able).

        Returns:
            ``{"pixel_accuracy", "mean_accuracy", "miou", "per_class_iou": {name: iou | None},
            "confusion_matrix": rows = true class, columns = predicted}``.
        """
        iou = self.iou.compute().cpu()
        defined = ~torch.isnan(iou)
        return {
            "pixel_accuracy": float(self.pixel_accuracy.compute()),
            "mean_accuracy": float(self.mean_accuracy.compute()),
            "miou": float(iou[defined].mean()) if bool(defined.any()) else math.nan,
            "per_class_iou": {
                name: (float(v) if ok else None)
                for name, v, ok in zip(self.class_names, iou.tolist(), defined.tolist())
            },
            "confusion_matrix": self.confusion.compute().cpu().tolist(),
        }
