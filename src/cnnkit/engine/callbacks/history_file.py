"""``history.json`` / ``history.csv`` rewritten after every epoch, so a run can be watched live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import Callback


class HistoryFile(Callback):
    """Saves the trainer's History into ``folder`` at the end of every epoch (atomically).

    ``cnnkit studio`` draws a run's curves from this file while ``cnnkit train`` is still writing
    the run; the files written at the end of training are the same.

    Args:
        folder: the run folder.
    """

    display_only = True  # a copy of the History for readers outside: no state of its own

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self.trainer.history.save(self.folder)
