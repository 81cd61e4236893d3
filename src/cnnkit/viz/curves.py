"""Learning curves: loss and accuracy, train vs validation, best epoch marked."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # notebooks keep their inline figures; elsewhere files only
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .lang import figure_text


def plot_history(
    epochs: Sequence[dict[str, float]],
    best_epoch: int | None = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Plot loss and accuracy per epoch like the course's loss curves.

    Args:
        epochs: History rows (``epoch`` from 1, ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``).
        best_epoch: epoch (from 1) to mark, e.g. the one EarlyStopping restored.
        path: save the figure there (PNG or SVG by extension).
        title: figure title.
    """
    if not epochs:
        raise ValueError("the history is empty: nothing to plot")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    # Fixed margins (inches) render faster than constrained layout.
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.88 if title else 0.95, wspace=0.22)
    for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        for key, style, name in ((metric, "-o", "train"), (f"val_{metric}", "-s", "validation")):
            # Only the epochs that have it: validation may skip some (fit's validation_freq).
            points = [(row["epoch"], row[key]) for row in epochs if row.get(key) is not None]
            if points:
                ax.plot(*zip(*points), style, label=name, markersize=4)
        if best_epoch is not None:
            ax.axvline(
                best_epoch, color="tab:red", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})"
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(figure_text(title))  # a Korean data folder's name, too
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
