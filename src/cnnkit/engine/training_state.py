"""A Trainer's training state, as ``last.ckpt`` keeps it: what exact resume needs and how it is
restored (``Trainer.state``, ``Trainer.load_state``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import TrainingError
from . import distributed
from .callbacks import Callback
from .checkpoint import CheckpointError, rng_state, set_rng_state
from .weight_average import load_weight_average

if TYPE_CHECKING:
    from .trainer import Trainer

# What training_state writes and restore_training_state needs.
STATE_KEYS = ("epoch", "global_step", "seed", "model", "optimizer", "scheduler", "callbacks", "rng")


def stateful_callbacks(callbacks: Sequence[Callback]) -> list[Callback]:
    """The callbacks whose state changes the numbers (display-only ones are left out)."""
    return [
        cb
        for cb in callbacks
        if not getattr(cb, "display_only", False) and not getattr(cb, "stateless", False)
    ]


def cb_key(index: int, cb: Callback | None, saved: str | None = None) -> str:
    """``'index:ClassName'``, the key of a callback's state in a checkpoint."""
    name = saved.partition(":")[2] if saved is not None else type(cb).__name__
    return f"{index}:{name}"


def training_state(trainer: Trainer) -> dict[str, Any]:
    """Model, optimizer moments, scheduler, counters, callback states and RNGs of ``trainer``."""
    average = trainer.weight_average
    return {
        "epoch": trainer.epoch,
        "global_step": trainer.global_step,
        "seed": trainer.seed,
        "task": trainer.task.name,
        # The weights training goes on from (with ``ema``, the average is kept beside them).
        "model": trainer.model.state_dict() if average is None else average.training_weights(trainer.model),
        "weight_average": None if average is None else average.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "callbacks": {
            cb_key(i, cb): cb.state_dict() for i, cb in enumerate(stateful_callbacks(trainer.callbacks))
        },
        "rng": rng_state(),
        # One state per rank (rank order) and the group's size: resume needs the same size.
        "rng_ranks": distributed.gather_objects(rng_state()) if trainer.world.active else [],
        "world_size": trainer.world.size,
        "stop_training": trainer.stop_training,
        # CPU sums split over another number of threads round differently; resume reuses this.
        "num_threads": torch.get_num_threads(),
    }


def restore_training_state(
    trainer: Trainer, body: dict[str, Any], total_steps: int | None = None, source: str = "checkpoint"
) -> None:
    """Restore ``trainer`` from a verified checkpoint body (``checkpoint.load_checkpoint``).

    The stateful callbacks must be of the same types, in the same order, as when it was saved.

    Raises:
        CheckpointError: ``body`` is not a training state.
        TrainingError: it belongs to another task, process count, scheduler or callback list.
    """
    missing = [key for key in STATE_KEYS if key not in body]
    if missing:
        raise CheckpointError(f"{source} is not a training checkpoint: it lacks {missing}")
    if body.get("task", trainer.task.name) != trainer.task.name:
        raise TrainingError(f"{source} was written by task {body['task']!r}, not {trainer.task.name!r}")
    saved_world = int(body.get("world_size", 1))  # absent in single-process files
    if saved_world != trainer.world.size:
        raise TrainingError(
            f"{source} was trained by {saved_world} process(es), this run has {trainer.world.size}: "
            f"resume it with the same number (--nproc {saved_world})"
        )
    trainer.model.load_state_dict(body["model"])
    load_weight_average(trainer.weight_average, body.get("weight_average"), trainer.model, source)
    if body["scheduler"] is not None and trainer.scheduler is None:
        if trainer.scheduler_factory is None or total_steps is None:
            raise TrainingError(f"{source} has a scheduler state but this trainer has no scheduler")
        # Built before the optimizer's state is loaded: a new scheduler writes its starting
        # rate into the optimizer, which the saved state then overwrites with the resumed one.
        trainer.scheduler = trainer.scheduler_factory(trainer.optimizer, total_steps)
    trainer.optimizer.load_state_dict(body["optimizer"])
    if body["scheduler"] is not None:
        trainer.scheduler.load_state_dict(body["scheduler"])
    saved = body["callbacks"]
    mine = {cb_key(i, cb): cb for i, cb in enumerate(stateful_callbacks(trainer.callbacks))}
    # Files written before display callbacks were left out still list them: skip those.
    saved = {k: v for k, v in saved.items() if not k.endswith(":ProgressBar")}
    saved = {cb_key(i, None, k): v for i, (k, v) in enumerate(saved.items())}
    if list(saved) != list(mine):
        raise TrainingError(f"{source}: callbacks {list(saved)} differ from this run's {list(mine)}")
    for key, cb in mine.items():
        cb.load_state_dict(saved[key])
    trainer.epoch = int(body["epoch"])
    trainer.global_step = int(body["global_step"])
    trainer.seed = int(body["seed"])
    trainer._stopped_at_checkpoint = bool(body.get("stop_training", False))  # absent in older files
    set_rng_state(body["rng_ranks"][trainer.world.rank] if trainer.world.active else body["rng"])
