"""Stop (or warn) when the training loss grows by orders of magnitude (a finite blow-up)."""

from __future__ import annotations

import math
import sys
from typing import Any

from ...errors import TrainingError
from .base import Callback

ACTIONS = ("stop", "warn")


class DivergenceGuard(Callback):
    """Compares every epoch's mean training loss with the loss training started at.

    NaN and inf stop the loop on their own (``Trainer(check_finite=True)``); a loss that stays
    finite but climbs to 1e28 (Adam at ``--lr 1e6``) would otherwise end in a run that exits
    cleanly and predicts one class. The reference is the first batch's loss of this session,
    floored at 1 so that a loss which starts near 0 needs a real blow-up to trip the guard.
    It keeps no state: a resumed run takes its own first batch as the reference.

    Args:
        factor: an epoch loss above ``factor`` × the reference is divergence (default 1000:
            three orders of magnitude).
        action: ``"stop"`` raises a TrainingError at the end of that epoch (before its
            checkpoint is written); ``"warn"`` prints one line on stderr and goes on.
    """

    stateless = True  # nothing to save: leaving it out of checkpoints keeps old ones resumable

    def __init__(self, factor: float = 1e3, action: str = "stop") -> None:
        if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 1):
            raise ValueError(f"divergence factor must be a finite number > 1, got {factor!r}")
        if action not in ACTIONS:
            raise ValueError(f"divergence action must be one of {ACTIONS}, got {action!r}")
        self.factor = float(factor)
        self.action = action
        self.reference: float | None = None

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.reference = None

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        if self.reference is None and math.isfinite(logs.get("loss", math.nan)):
            self.reference = float(logs["loss"])  # the running mean after one batch: that batch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        loss = logs.get("loss")
        if self.reference is None or loss is None or not math.isfinite(loss):
            return
        base = max(self.reference, 1.0)
        if loss <= self.factor * base:
            return
        lr = self.trainer.optimizer.param_groups[0]["lr"]
        message = (
            f"training loss {loss:.3g} in epoch {epoch + 1} is {loss / base:.0e} times the "
            f"{self.reference:.3g} training started at: training diverged. Try a lower learning "
            f"rate (now {lr:g}; e.g. {lr / 10:g})"
        )
        if self.action == "warn":
            print(f"cnnkit: warning: {message}", file=sys.stderr)
            return
        raise TrainingError(f"{message}; training stopped and no checkpoint was written for this epoch")
