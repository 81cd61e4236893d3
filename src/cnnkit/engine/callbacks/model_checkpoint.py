"""Save the model's weights as safetensors, atomically (Keras ModelCheckpoint)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...io.weights import save_weights
from .. import distributed
from .base import Callback, improved, monitor_mode


class ModelCheckpoint(Callback):
    """Write the weights to ``path`` at the end of an epoch (only on improvement by default).

    The file is a safetensors state dict written to a temp file in the same folder, fsynced and
    renamed, so a crash leaves the previous best file intact.

    Args:
        path: destination ``.safetensors`` file.
        monitor: metric that decides "best".
        save_best_only: write only when ``monitor`` improves.
        mode: ``'min'``, ``'max'`` or ``'auto'``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        monitor: str = "val_loss",
        save_best_only: bool = True,
        mode: str = "auto",
    ) -> None:
        self.path = Path(path)
        if self.path.suffix != ".safetensors":
            raise ValueError(f"checkpoint path must end in .safetensors, got {str(path)!r}")
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.mode = monitor_mode(monitor, mode)
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.save_best_only:
            value = self.monitored(self.monitor, logs)
            if value is None or not improved(value, self.best, self.mode):
                return
            self.best, self.best_epoch = value, epoch
        if not distributed.current().main:  # one writer per run: rank 0 (all ranks hold the same weights)
            return
        meta = {"epoch": str(epoch), "logs": json.dumps({k: float(v) for k, v in logs.items()})}
        save_weights(self.trainer.model.state_dict(), self.path, metadata=meta)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
