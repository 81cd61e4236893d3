"""Learning curves: both metrics, train and validation, and the best epoch marked."""

from __future__ import annotations

import json

import numpy as np

from cnnkit.viz import plot_history


def test_curves_plot_the_run_history_and_mark_the_best_epoch(tiny_run):
    history = json.loads((tiny_run.path / "history.json").read_text())
    history = history + [{**history[0], "epoch": 2, "loss": 0.5, "val_loss": 0.6}]  # a second point
    fig = plot_history(history, best_epoch=2)
    loss_ax, acc_ax = fig.axes
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    np.testing.assert_allclose(lines["train"].get_ydata(), [row["loss"] for row in history])
    np.testing.assert_allclose(lines["validation"].get_ydata(), [row["val_loss"] for row in history])
    assert list(lines["best epoch (2)"].get_xdata()) == [2, 2]
    acc_lines = {line.get_label(): line for line in acc_ax.get_lines()}
    np.testing.assert_allclose(acc_lines["validation"].get_ydata(), [row["val_accuracy"] for row in history])
    assert (tiny_run.path / "curves.png").is_file()


def test_validation_curves_follow_the_epochs_that_validated():
    """fit(validation_freq=2) over 5 epochs validates after epochs 2, 4 and 5: those points only,
    at those epochs."""
    rows = [{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5 + e / 20} for e in range(1, 6)]
    for row in rows:
        if row["epoch"] in (2, 4, 5):
            row.update(val_loss=1.2 / row["epoch"], val_accuracy=0.4 + row["epoch"] / 20)
    loss_ax, acc_ax = plot_history(rows).axes
    for ax, key in ((loss_ax, "val_loss"), (acc_ax, "val_accuracy")):
        line = next(line for line in ax.get_lines() if line.get_label() == "validation")
        assert list(line.get_xdata()) == [2, 4, 5]
        np.testing.assert_allclose(line.get_ydata(), [row[key] for row in rows if key in row])
