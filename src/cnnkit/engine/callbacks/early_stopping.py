"""Stop when a monitored metric stops improving (Keras EarlyStopping)."""

from __future__ import annotations

import copy
from typing import Any

import torch

from .base import Callback, improved, monitor_mode


class EarlyStopping(Callback):
    """Stop training after ``patience`` epochs without improvement of ``monitor``.

    Args:
        monitor: metric in the epoch logs (``'val_loss'`` like the course).
        patience: epochs without improvement before stopping; None never stops (the best
            epoch's weights are still kept with ``restore_best_weights``).
        restore_best_weights: put the best epoch's weights back at the end.
        min_delta: smallest change that counts as an improvement.
        mode: ``'min'``, ``'max'`` or ``'auto'`` (from the metric name).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int | None = 2,
        restore_best_weights: bool = True,
        min_delta: float = 0.0,
        mode: str = "auto",
    ) -> None:
        if patience is not None and patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.monitor = monitor
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.min_delta = min_delta
        self.mode = monitor_mode(monitor, mode)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        value = self.monitored(self.monitor, logs)
        if value is None:  # no validation this epoch: patience counts validations
            return
        if improved(value, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = copy.deepcopy(self.trainer.model.state_dict())
        else:
            self.wait += 1
            if self.patience is not None and self.wait >= self.patience:
                self.stopped_epoch = epoch
                self.trainer.stop_training = True

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
        }
        if self.best_weights is not None:
            state["best_weights"] = self.best_weights
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]
        self.best_weights = state.get("best_weights")
