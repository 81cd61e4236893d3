"""Training: the Trainer, its callbacks, metrics and run folders."""

from .callbacks import Callback, EarlyStopping, History, ModelCheckpoint, ProgressBar
from .device import pick_device
from .trainer import Trainer, make_optimizer, seed_everything

__all__ = [
    "Callback",
    "EarlyStopping",
    "History",
    "ModelCheckpoint",
    "ProgressBar",
    "Trainer",
    "make_optimizer",
    "pick_device",
    "seed_everything",
]
