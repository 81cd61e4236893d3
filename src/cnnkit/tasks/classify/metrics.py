"""Classification metrics from a confusion matrix (torchmetrics computes the matrix)."""

from __future__ import annotations

import torch


def confusion_matrix(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts Tensor[K, K]: row = true class, column = predicted class."""
    # Imported here: torchmetrics takes about a second to import, which every `cnnkit train`
    # would pay before its first epoch.
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    return multiclass_confusion_matrix(preds.cpu(), target.cpu(), num_classes=num_classes).long()


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
