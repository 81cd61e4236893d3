"""Transfer learning the course's way (Géron ch. 14, "pretrained Xception on flowers").

Two phases on one model:

1. **Head**: every parameter but the new classifier is frozen (``requires_grad=False``) and the
   frozen base's batch-norm layers stay in eval mode, so their running statistics do not move
   either; only the new head learns, at ``lr``.
2. **Full**: all layers are unfrozen and training goes on with a fresh optimizer at a lower rate
   (``lr * lr_factor``, or per-group rates), so the pretrained features are adjusted, not erased.

Both phases use the callbacks of ``cnnkit train`` (early stopping with the best weights
restored, a best-weights checkpoint, progress); :func:`~cnnkit.runs.finetune.finetune_run`
writes the run folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...data.arrays import ArrayDataset
from ...engine import distributed
from ...engine.callbacks import Callback, EarlyStopping, History, ModelCheckpoint, ProgressBar
from ...engine.device import pick_device
from ...engine.optimizers import make_optimizer
from ...engine.threads import ThreadController
from ...models.surgery import _base_bn_in_eval, _resolve_head, frozen_base, param_groups
from ..classify.task import ClassifyTrainer

__all__ = ["FinetuneResult", "finetune"]


@dataclass
class FinetuneResult:
    """What :func:`finetune` did.

    Attributes:
        history: every epoch of both phases (``epoch`` counted on from phase 1, ``phase`` 1 or 2).
        head_epochs_run: epochs of phase 1 (early stopping may end it sooner).
        full_epochs_run: epochs of phase 2.
        best_epoch: epoch (from 1) whose weights the model holds at the end, or None.
        best: the monitored value at that epoch.
        stopped_early: whether early stopping ended a phase.
        trainer: the last phase's Trainer (``evaluate``, ``predict`` with the same normalisation).
        frozen: names of the parameters frozen in phase 1.
    """

    history: History
    head_epochs_run: int
    full_epochs_run: int
    best_epoch: int | None
    best: float | None
    stopped_early: bool
    trainer: ClassifyTrainer
    frozen: list[str] = field(default_factory=list)


class FinetunePhase(Callback):
    """Which phase a checkpoint was written in, and phase 1's epochs: what resuming needs to
    go on in the right phase (both phases' trainers carry it, so every last.ckpt holds it)."""

    def __init__(self) -> None:
        self.phase = 1
        self.head_run = 0
        self.rows: list[dict[str, float]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "head_run": self.head_run, "rows": json.dumps(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phase, self.head_run = int(state["phase"]), int(state["head_run"])
        self.rows = json.loads(state["rows"])

    @classmethod
    def of(cls, body: Mapping[str, Any] | None) -> FinetunePhase:
        """The phase recorded in a checkpoint body (a fresh phase 1 without one)."""
        marker = cls()
        for key, state in ((body or {}).get("callbacks") or {}).items():
            if key.endswith(f":{cls.__name__}"):
                marker.load_state_dict(state)
        return marker


def finetune(
    model: nn.Module,
    train: ArrayDataset,
    val: ArrayDataset,
    *,
    head_epochs: int = 5,
    full_epochs: int = 10,
    lr: float = 1e-3,
    lr_factor: float = 0.1,
    group_lrs: Mapping[str, float] | None = None,
    head: Sequence[str] | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
    batch_size: int = 32,
    patience: int = 2,
    monitor: str = "val_loss",
    keep_bn_eval: bool = False,
    callbacks: Sequence[Callback] = (),
    best_path: str | os.PathLike[str] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
    seed: int = 42,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    amp: str | None = None,
    channels_last: bool = False,
    resume_state: Mapping[str, Any] | None = None,
    sync_bn: bool = False,
    max_grad_norm: float | None = None,
    ema: float | None = None,
    validation_freq: int = 1,
    divergence: float | None = 1e3,
    on_divergence: str = "stop",
    threads: ThreadController | None = None,
) -> FinetuneResult:
    """Train a new head on a frozen base, then fine-tune all layers at a lower learning rate.

    Args:
        model: a model whose classifier is new (see :func:`pretrained_model`).
        train: training images uint8 Tensor[N, C, H, W] and labels.
        val: validation data for early stopping and the best-weights choice.
        head_epochs: maximum epochs of phase 1 (0 skips it).
        full_epochs: maximum epochs of phase 2 (0: the base stays frozen, "feature extraction").
        lr: phase-1 learning rate.
        lr_factor: phase-2 rate is ``lr * lr_factor`` (the course drops it 20×; default 10×).
        group_lrs: phase-2 rates by module-name prefix (see :func:`param_groups`); parameters
            no prefix matches use ``lr * lr_factor``.
        head: module-name prefixes trained in phase 1; default: what ``reset_classifier``
            creates.
        optimizer: a name from ``OPTIMIZERS``; each phase gets a fresh one (Keras recompiles).
        weight_decay: passed to the optimizer.
        label_smoothing: cross-entropy label smoothing.
        batch_size: batch size of both phases.
        patience: early-stopping patience of each phase; phase 2 has to beat phase 1's best.
        monitor: metric that picks the best epoch.
        keep_bn_eval: keep the base's batch-norm layers in eval mode in phase 2 too (Keras'
            advice for small data sets; the course lets them train).
        callbacks: extra callbacks, used in both phases.
        best_path: write the best weights (across both phases) to this ``.safetensors`` file.
        checkpoint_path: write the trainer's resumable checkpoint here after every epoch.
        progress: show a progress bar / per-epoch lines.
        device: device name, or None for the best available.
        seed: seeds the head's shuffling and dropout.
        normalize: (mean, std) per channel after scaling uint8 pixels to [0, 1].
        augment: function applied to each float training batch on the device.
        amp: ``"bf16"`` autocast in both phases, or None (FP32).
        channels_last: the model and its batches in the channels-last memory format.
        resume_state: a verified ``last.ckpt`` body that an interrupted call with the same
            arguments wrote: training goes on in the phase and epoch it records, exactly.
        sync_bn: under data-parallel training (both phases run under DDP), BatchNorm layers
            normalise with the global batch's statistics.
        max_grad_norm, ema, divergence, on_divergence, threads: the engine's options
            (``cnnkit.engine.Trainer``), for both phases (each phase averages its own weights).
        validation_freq: validate after every so many epochs of each phase, and after its last.

    Returns:
        FinetuneResult; ``model`` holds the best weights, in eval mode.

    Raises:
        ValueError: epochs, rates or class counts that do not fit.
    """
    if head_epochs < 0 or full_epochs < 0 or head_epochs + full_epochs < 1:
        raise ValueError(
            f"head_epochs and full_epochs must be >= 0 and not both 0, got {head_epochs} and {full_epochs}"
        )
    if lr <= 0 or lr_factor <= 0:
        raise ValueError(f"lr and lr_factor must be > 0, got {lr} and {lr_factor}")
    if val is None or not len(val):
        raise ValueError("finetune needs validation data (split it off with train.split(...))")
    out_features = getattr(model, "num_classes", None)
    if out_features is not None and out_features != train.num_classes:
        raise ValueError(
            f"the model has {out_features} outputs but the data {train.num_classes} classes; "
            f"call model.reset_classifier({train.num_classes}) or build it with "
            "pretrained_model(..., num_classes=...)"
        )
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model.to(dev)  # before the optimizers are built, so they hold the moved parameters
    if sync_bn and distributed.current().active:
        # Once, before the frozen base's BatchNorm layers get their eval-mode hooks (a Trainer
        # converting them would replace the hooked layers); the trainers below leave them be.
        model = distributed.convert_sync_batchnorm(model, dev)
    trainable = _resolve_head(model, head)
    checkpoint = ModelCheckpoint(best_path, monitor=monitor) if best_path is not None else None
    bar = [ProgressBar()] if progress else []

    marker = FinetunePhase.of(resume_state)

    def trainer_for(opt: torch.optim.Optimizer, early: EarlyStopping) -> ClassifyTrainer:
        cbs = [early, *([checkpoint] if checkpoint else []), *callbacks, marker, *bar]
        return ClassifyTrainer(
            model,
            optimizer=opt,
            label_smoothing=label_smoothing,
            callbacks=cbs,
            device=dev,
            seed=seed,
            normalize=normalize,
            augment=augment,
            amp=amp,
            channels_last=channels_last,
            checkpoint_path=checkpoint_path,
            max_grad_norm=max_grad_norm,
            ema=ema,
            divergence=divergence,
            on_divergence=on_divergence,
            threads=threads,
        )

    frozen: list[str] = []
    early = EarlyStopping(monitor, patience=patience, restore_best_weights=True)
    stopped = False
    trainer: ClassifyTrainer | None = None
    if head_epochs and marker.phase == 1:
        params = dict(model.named_parameters())
        opt = make_optimizer(optimizer, [params[n] for n in trainable], lr, weight_decay)
        with frozen_base(model, trainable) as frozen:
            trainer = trainer_for(opt, early)
            if resume_state is not None:
                trainer.load_state(dict(resume_state), source="last.ckpt")
            trainer.fit(
                train,
                val,
                epochs=head_epochs,
                batch_size=batch_size,
                verbose=0,
                validation_freq=validation_freq,
            )
        marker.head_run = trainer.epoch
        marker.rows = [{**row, "phase": 1.0} for row in trainer.history.epochs]
        stopped = early.stopped_epoch is not None
    elif head_epochs:  # resumed in phase 2: phase 1's frozen names and stop, as it left them
        frozen = [name for name, _ in model.named_parameters() if name not in set(trainable)]
        stopped = 0 < marker.head_run < head_epochs
    head_run = marker.head_run
    full_run = 0
    rows = list(marker.rows)
    if full_epochs:
        marker.phase = 2
        for p in model.parameters():
            p.requires_grad_(True)
        opt = make_optimizer(
            optimizer, param_groups(model, lr * lr_factor, group_lrs), lr * lr_factor, weight_decay
        )
        second = EarlyStopping(monitor, patience=patience, restore_best_weights=True)
        if early.best is not None:  # the best so far is phase 1's: phase 2 must beat it
            second.load_state_dict({**early.state_dict(), "wait": 0, "stopped_epoch": None})
        early = second
        with _base_bn_in_eval(model, trainable) if keep_bn_eval else contextlib.nullcontext():
            trainer = trainer_for(opt, early)
            trainer.epoch = head_run  # epochs count on from phase 1 (history, checkpoints, progress)
            if resume_state is not None and FinetunePhase.of(resume_state).phase == 2:
                trainer.load_state(dict(resume_state), source="last.ckpt")  # early stopping's state too
            trainer.fit(
                train,
                val,
                epochs=head_run + full_epochs,
                batch_size=batch_size,
                verbose=0,
                validation_freq=validation_freq,
            )
        full_run = trainer.epoch - head_run
        rows += [{**row, "phase": 2.0} for row in trainer.history.epochs]
        stopped = stopped or early.stopped_epoch is not None
    assert trainer is not None  # at least one phase ran (checked above)
    history = History()
    history.epochs = rows
    model.eval()
    best_epoch = None if early.best_epoch is None else early.best_epoch + 1
    return FinetuneResult(history, head_run, full_run, best_epoch, early.best, stopped, trainer, frozen)
