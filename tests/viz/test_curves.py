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
