"""``SegmentationTrainer``: the engine's Trainer with the semantic segmentation task.

Training runs through the one loop, ``cnnkit.engine.Trainer`` (seeding, precision, clipping,
guards, callbacks, checkpoints, exact resume); ``SegmentTask`` says what a batch and its loss
are. The epoch logs hold ``loss``, ``pixel_accuracy``, ``val_loss``, ``val_pixel_accuracy``,
``val_miou``, ``lr`` and ``seconds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...data.masks import MaskDataset
from ...engine.callbacks import Callback
from ...engine.device import pick_device
from ...engine.perf import pick_perf_settings
from ...engine.schedules import SchedulerFactory
from ...engine.trainer import Trainer
from .task import SegmentTask, cosine_decay, prepare_images

SCHEDULES = ("cosine", "constant")


class SegmentationTrainer(Trainer):
    """Trains a model that maps Tensor[N, C, H, W] to logits Tensor[N, K, H, W].

    Args:
        model: e.g. a ``Segmenter``.
        task: a ready SegmentTask (then ``loss`` and ``flip`` must be left alone).
        loss: the pixel loss (default: cross-entropy ignoring 255).
        optimizer: a name from ``cnnkit.engine.optimizers.OPTIMIZERS`` or a ready optimizer.
        lr: peak learning rate.
        weight_decay: passed to the optimizer.
        schedule: ``'cosine'`` (decay to 0 over all steps, per batch), ``'constant'``, or a
            scheduler factory ``(optimizer, total_steps) -> scheduler``.
        flip: randomly mirror training images left-right (with their masks).
        callbacks: extra callbacks; a History is always kept in ``self.history``.
        device: a device name or None to pick CUDA / MPS / CPU.
        seed: seeds the batch order and flips (weights are seeded by the caller).
        amp: ``'bf16'`` runs the training forward passes under bf16 autocast (the loss, the
            weights and evaluation stay float32), None trains in float32; ``'auto'`` picks
            what ``cnnkit.engine.perf.pick_perf_settings`` measured best for the device, and
            its channels-last choice too (unless ``channels_last`` is given).
        **engine_options: the engine's other options (``checkpoint_path``, ``max_grad_norm``,
            ``check_finite``, ``channels_last``, ``compile``, ...), see ``cnnkit.engine.Trainer``.
    """

    task: SegmentTask

    def __init__(
        self,
        model: nn.Module,
        task: SegmentTask | None = None,
        *,
        loss: nn.Module | None = None,
        optimizer: str | torch.optim.Optimizer = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        schedule: str | SchedulerFactory = "cosine",
        flip: bool = True,
        callbacks: Sequence[Callback] = (),
        device: str | torch.device | None = None,
        seed: int = 42,
        amp: str | None = "auto",
        **engine_options: Any,
    ) -> None:
        if "scheduler" in engine_options:
            raise TypeError("SegmentationTrainer takes its scheduler as schedule=, not scheduler=")
        if not callable(schedule) and schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES} or a scheduler factory, got {schedule!r}")
        if task is None:
            task = SegmentTask(loss=loss, flip=flip)
        elif loss is not None or not flip:
            raise ValueError("give loss and flip to the SegmentTask, not next to a ready task")
        device = device if isinstance(device, torch.device) else pick_device(device)
        perf = pick_perf_settings(device)
        # As before the engine: the device's channels-last choice holds whatever amp is.
        engine_options.setdefault("channels_last", perf.channels_last)
        scheduler = cosine_decay if schedule == "cosine" else None if schedule == "constant" else schedule
        super().__init__(
            model,
            task,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            callbacks=callbacks,
            device=device,
            seed=seed,
            scheduler=scheduler,
            amp=perf.amp if amp == "auto" else amp,
            **engine_options,
        )
        self.schedule = schedule

    @property
    def loss(self) -> nn.Module:
        """The task's pixel loss."""
        return self.task.loss

    def predict(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Predicted classes, int64 Tensor[N, H, W] on the CPU, for uint8 Tensor[N, C, H, W]."""
        return self.task.predict(self, images, batch_size)

    def evaluate(self, data: MaskDataset, batch_size: int = 64) -> dict[str, Any]:
        """Mean loss and the SegmentationMetrics scores on ``data`` (eval mode)."""
        return self.task.evaluate(self, data, batch_size)


__all__ = ["SCHEDULES", "SegmentationTrainer", "prepare_images"]
