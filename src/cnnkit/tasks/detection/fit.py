"""What localization and detection training share: the engine's Trainer set up as their
results were trained (AdamW, a one-cycle learning rate, channels-last), used by
``fit_localizer`` / ``fit_detector`` and by the run folders of ``cnnkit.runs.scenes``."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ...data.scenes import SceneDataset
from ...engine.callbacks import Callback, EarlyStopping
from ...engine.schedules import one_cycle
from ...engine.task import Task
from ...engine.trainer import Trainer


class EpochEndCall(Callback):
    """Calls ``fn(epoch from 1, logs)`` after every epoch (the CLI's one line per epoch)."""

    display_only = True  # no state: a resumed run need not have it

    def __init__(self, fn: Callable[[int, dict[str, float]], None]) -> None:
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self.fn(epoch + 1, logs)


def scene_trainer(
    model: nn.Module,
    task: Task,
    *,
    lr: float,
    device: torch.device | str | None,
    weight_decay: float,
    amp: str | None,
    seed: int,
    callbacks: Sequence[Callback] = (),
    **engine_options: Any,
) -> Trainer:
    """The engine's Trainer for ``task``: AdamW and PyTorch's one-cycle defaults, channels-last.

    Args:
        callbacks: the run's callbacks (early stopping on ``task.monitor``, checkpoints, display).
        engine_options: more ``cnnkit.engine.Trainer`` options (``checkpoint_path``,
            ``max_grad_norm``, ...).
    """
    # torch.optim.lr_scheduler.OneCycleLR's defaults (what this task's results were trained with)
    schedule = one_cycle(lr, pct_start=0.15, div_factor=25.0, final_div_factor=1e4, anneal="cos")
    return Trainer(
        model,
        task,
        optimizer="adamw",
        lr=lr,
        weight_decay=weight_decay,
        scheduler=schedule,
        amp=amp,
        channels_last=True,
        device=device,
        seed=seed,
        callbacks=callbacks,
        **engine_options,
    )


def fit_task(
    model: nn.Module,
    task: Task,
    train: SceneDataset,
    val: SceneDataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    device: torch.device,
    weight_decay: float,
    patience: int | None = None,
    amp: str | None = None,
    seed: int = 0,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    **engine_options: Any,
) -> dict[str, Any]:
    """Train ``task`` with the engine: AdamW, PyTorch's one-cycle defaults, and early stopping
    on ``task.monitor`` (higher is better) that puts the best epoch's weights back.

    ``amp='bf16'`` runs the training forward passes under bf16 autocast.

    Args:
        patience: stop after this many epochs without a better ``task.monitor`` (None: never).
        seed: the engine's seed (batch order and augmentation of every epoch).
        on_epoch_end: called with (epoch from 1, logs) after every epoch.
        resume_from: a ``last.ckpt`` that an interrupted call with the same arguments and
            ``checkpoint_path`` wrote; training goes on from it exactly.
        engine_options: more ``cnnkit.engine.Trainer`` options (``checkpoint_path``, extra
            ``callbacks`` run after the early stopping, ``max_grad_norm``, ...).

    Returns:
        ``{"history": [per-epoch dict], "best_epoch": int, "epochs_run": int, "train_seconds": float}``;
        the model holds the best weights afterwards.

    Raises:
        TrainingError: the loss, a gradient (with ``max_grad_norm``) or the weights became NaN or
            infinite; no checkpoint of that epoch is written.
    """
    stopping = EarlyStopping(task.monitor, mode="max", patience=patience, restore_best_weights=True)
    callbacks: list[Callback] = [stopping]
    if on_epoch_end is not None:
        callbacks.append(EpochEndCall(on_epoch_end))
    callbacks += list(engine_options.pop("callbacks", ()))
    trainer = scene_trainer(
        model, task, lr=lr, device=device, weight_decay=weight_decay, amp=amp, seed=seed,
        callbacks=callbacks, **engine_options,
    )  # fmt: skip
    if resume_from is not None:
        steps = epochs * math.ceil(task.num_samples(train) / (batch_size * trainer.world.size))
        trainer.load_checkpoint(resume_from, total_steps=steps)
    start = time.perf_counter()
    trainer.fit(train, val, epochs=epochs, batch_size=batch_size, verbose=0)
    return {
        "history": trainer.history.epochs,
        "best_epoch": 0 if stopping.best_epoch is None else stopping.best_epoch + 1,
        "epochs_run": len(trainer.history.epochs),
        "train_seconds": time.perf_counter() - start,
    }
