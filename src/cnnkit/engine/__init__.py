"""The training engine: one loop (Trainer) for every task (Task), its callbacks and checkpoints."""

from .callbacks import Callback, EarlyStopping, History, ModelCheckpoint, ProgressBar
from .device import pick_device
from .optimizers import make_optimizer
from .task import Task
from .trainer import Trainer, seed_everything

__all__ = [
    "Callback",
    "EarlyStopping",
    "History",
    "ModelCheckpoint",
    "ProgressBar",
    "Task",
    "Trainer",
    "make_optimizer",
    "pick_device",
    "seed_everything",
]
