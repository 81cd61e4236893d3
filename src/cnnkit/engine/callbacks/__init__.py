"""Callbacks for ``Trainer.fit``, one per file."""

from .base import Callback
from .divergence import DivergenceGuard
from .early_stopping import EarlyStopping
from .history import History
from .history_file import HistoryFile
from .model_checkpoint import ModelCheckpoint
from .progress import ProgressBar

__all__ = [
    "Callback",
    "DivergenceGuard",
    "EarlyStopping",
    "History",
    "HistoryFile",
    "ModelCheckpoint",
    "ProgressBar",
]
