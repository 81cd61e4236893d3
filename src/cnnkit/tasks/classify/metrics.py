"""Classification metrics from a confusion matrix."""

from __future__ import annotations

import torch


def confusion_matrix(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts Tensor[K, K] (int64): row = true class, column = predicted class.

    One ``bincount`` of ``true * K + predicted``: torchmetrics computes the same but takes over a
    second to import (it loads SciPy), which every ``cnnkit train`` and ``evaluate`` would pay.

    Args:
        preds (Tensor[N]): predicted labels.
        target (Tensor[N]): true labels.
        num_classes: K.

    Raises:
        ValueError: different lengths, or a label outside 0..K-1.
    """
    preds, target = preds.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
    if preds.shape != target.shape:
        raise ValueError(f"{len(preds)} predictions for {len(target)} labels")
    for name, labels in (("predicted", preds), ("true", target)):
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"{name} labels must be 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}"
            )
    counts = torch.bincount(target * num_classes + preds, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def classification_report(cm: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """Accuracy and per-class precision / recall / F1 / support from a confusion matrix.

    Classes never predicted get precision 0 (and never seen, recall 0), like scikit-learn's
    ``zero_division=0``.
    """
    cm = cm.double()
    tp = cm.diag()
    predicted = cm.sum(0)
    actual = cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    names = class_names or [str(i) for i in range(len(tp))]
    return {
        "accuracy": float(tp.sum() / cm.sum().clamp(min=1)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, actual)
        },
        "macro_f1": float(f1.mean()),
        "confusion_matrix": cm.long().tolist(),
    }
