"""Errors: confusion matrices and the test images the model gets wrong most confidently."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..tasks.classify.metrics import confusion_matrix
from ._common import class_label, display_image, fixed_margins, grid_shape

__all__ = ["Mistake", "confusion_counts", "most_confident_errors", "plot_confusion_matrix", "plot_mistakes"]


def confusion_counts(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> np.ndarray:
    """Counts int64 [num_classes, num_classes]: row = true class, column = predicted class.

    Args:
        targets (Tensor[N]): true labels.
        predictions (Tensor[N]): predicted labels.
        num_classes: matrix size.
    """
    return confusion_matrix(predictions, targets, num_classes).numpy()


def plot_confusion_matrix(
    matrix: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Counts and row-normalised rates side by side (rows: true class, columns: predicted).

    Args:
        matrix: int counts [K, K], row = true class (as in metrics.json).
        class_names: K names for the axes (default: class indices).
        title: figure title.

    Returns:
        Figure whose first two axes are the matrices (then their colour bars):
        ``fig.axes[0].images[0].get_array()`` holds the counts and ``fig.axes[1]``'s the
        row-normalised rates (rows of classes with no sample are 0).
    """
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {counts.shape}")
    k = counts.shape[0]
    names = [class_label(i, class_names) for i in range(k)]
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    # Axes placed in inches: two square matrices, each with its colour bar (fast to render).
    side, left, gap, bar, bottom, top = max(3.0, 0.45 * k), 1.2, 1.55, 0.15, 1.2, 0.7
    width, height = left + 2 * (side + 0.1 + bar) + gap + 0.6, bottom + side + top
    fig = plt.figure(figsize=(width, height))
    x0 = [left + i * (side + 0.1 + bar + gap) for i in range(2)]
    axes = [fig.add_axes((x / width, bottom / height, side / width, side / height)) for x in x0]
    bars = [fig.add_axes(((x + side + 0.1) / width, bottom / height, bar / width, side / height)) for x in x0]
    for ax, cax, values, label, fmt in (
        (axes[0], bars[0], counts, "counts", "d"),
        (axes[1], bars[1], rates, "row-normalised", ".2f"),
    ):
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if values is rates else None)
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(label)
        fig.colorbar(image, cax=cax)
        peak = values.max() if values.size else 0
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    v = values[i, j]
                    ax.text(
                        j,
                        i,
                        format(v, fmt),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if peak and v > 0.6 * peak else "black",
                    )
    correct = int(np.trace(counts))
    total = int(counts.sum())
    accuracy = correct / total if total else 0.0
    fig.suptitle(title or f"confusion matrix: {correct:,} of {total:,} right ({accuracy:.2%})", fontsize=10)
    return fig


@dataclass(frozen=True)
class Mistake:
    """One misclassified image: its index in the dataset, labels and the predicted probability."""

    index: int
    true: int
    predicted: int
    confidence: float


def most_confident_errors(probs: torch.Tensor, targets: torch.Tensor, k: int = 16) -> list[Mistake]:
    """The ``k`` wrong predictions with the highest predicted probability, most confident first.

    Args:
        probs (Tensor[N, K]): class probabilities.
        targets (Tensor[N]): true labels.
        k: how many to return (fewer if there are fewer mistakes).
    """
    confidence, predicted = probs.max(dim=1)
    wrong = torch.nonzero(predicted != targets).flatten()
    order = wrong[torch.argsort(confidence[wrong], descending=True, stable=True)][:k]
    return [Mistake(int(i), int(targets[i]), int(predicted[i]), float(confidence[i])) for i in order]


def plot_mistakes(
    images: torch.Tensor,
    mistakes: Sequence[Mistake],
    class_names: Sequence[str] | None = None,
    ncols: int = 8,
    title: str | None = None,
) -> Figure:
    """Grid of misclassified images titled with the true and predicted labels.

    Args:
        images (Tensor[N, C, H, W]): the dataset's images (uint8), indexed by ``Mistake.index``.
        mistakes: from :func:`most_confident_errors`.
        class_names: label names.
        ncols: tiles per row.
        title: figure title.

    Returns:
        Figure with one image axes per mistake, in the given order, each titled
        ``"true: A\\npred: B (97%)"``.
    """
    if not mistakes:
        fig = plt.figure(figsize=(4, 1.2))
        fig.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        return fig
    # The labels first: a Korean name sets up its font before the axes (and their titles) exist.
    titles = [
        f"true: {class_label(m.true, class_names)}\npred: {class_label(m.predicted, class_names)} "
        f"({m.confidence:.0%})"
        for m in mistakes
    ]
    rows, cols = grid_shape(len(mistakes), ncols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols + 0.2, 1.75 * rows + 0.5), squeeze=False)
    fixed_margins(fig, left=0.1, right=0.1, bottom=0.05, top=0.75, wspace=0.15, hspace=0.45)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m, text in zip(axes.flat, mistakes, titles):
        shown = display_image(images[m.index])
        ax.imshow(shown, cmap="gray_r" if shown.ndim == 2 else None)
        ax.set_title(text, fontsize=7)
    fig.suptitle(title or f"the {len(mistakes)} most confident mistakes", fontsize=10)
    return fig
