"""A short fit loop for segmentation models, extended by cnnkit's training callbacks.

``SegmentationTrainer`` has the attributes the callbacks in ``cnnkit.engine.callbacks`` use
(``model``, ``stop_training``, ``epochs``, ``steps_per_epoch``), so EarlyStopping,
ModelCheckpoint and ProgressBar work on it unchanged; the epoch logs hold ``loss``,
``pixel_accuracy``, ``val_loss``, ``val_pixel_accuracy``, ``val_miou``, ``lr`` and ``seconds``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...data.masks import MaskDataset
from ...engine.callbacks import Callback, History, ProgressBar
from ...engine.device import pick_device
from ...engine.perf import pick_perf_settings, train_autocast, tune_cpu_allocator
from ...engine.trainer import make_optimizer
from ...errors import TrainingError
from .losses import SegmentationLoss
from .metrics import SegmentationMetrics

SCHEDULES = ("cosine", "constant")
_SHOWN = ("loss", "pixel_accuracy", "val_loss", "val_miou", "val_segm_map", "val_bbox_map")


class SegmentationProgress(ProgressBar):
    """ProgressBar that shows the segmentation scores (mIoU, mask mAP) at the end of an epoch."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        text = "  ".join(f"{k} {logs[k]:.4f}" for k in _SHOWN if k in logs)
        if self._pbar is not None:
            self._pbar.set_postfix_str(text)
            self._pbar.close()
            self._pbar = None
        else:
            seconds = time.perf_counter() - self._t0
            print(
                f"epoch {epoch + 1}/{self.trainer.epochs}  {text}  ({seconds:.1f} s)",
                file=self.stream,
                flush=True,
            )


def prepare_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 Tensor[N, C, H, W] -> float Tensor on ``device`` scaled to [0, 1]."""
    x = images.to(device, non_blocking=True)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


class SegmentationTrainer:
    """Trains a model that maps Tensor[N, C, H, W] to logits Tensor[N, K, H, W].

    Args:
        model: e.g. a ``Segmenter``.
        loss: the pixel loss (default: cross-entropy ignoring 255).
        optimizer: a name from ``cnnkit.engine.trainer.OPTIMIZERS``.
        lr: peak learning rate.
        weight_decay: passed to the optimizer.
        schedule: ``'cosine'`` (decay to 0 over all steps, per batch) or ``'constant'``.
        flip: randomly mirror training images left-right (with their masks).
        callbacks: extra callbacks; a History is always kept in ``self.history``.
        device: a device name or None to pick CUDA / MPS / CPU.
        seed: seeds the batch order and flips (weights are seeded by the caller).
        amp: ``'bf16'`` runs the training forward passes under bf16 autocast (the loss, the
            weights and evaluation stay float32), None trains in float32; ``'auto'`` picks
            what ``cnnkit.engine.perf.pick_perf_settings`` measured best for the device.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        loss: nn.Module | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        schedule: str = "cosine",
        flip: bool = True,
        callbacks: Sequence[Callback] = (),
        device: str | torch.device | None = None,
        seed: int = 42,
        amp: str | None = "auto",
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        perf = pick_perf_settings(self.device)
        tune_cpu_allocator(self.device)
        self.amp = perf.amp if amp == "auto" else amp
        train_autocast(self.device, self.amp)  # rejects an unknown amp
        self.model = model.to(self.device)
        if perf.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss = loss if loss is not None else SegmentationLoss()
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(optimizer, trainable, lr, weight_decay)
        self.schedule = schedule
        self.flip = flip
        self.history = History()
        self.callbacks: list[Callback] = [self.history, *callbacks]
        self.seed = seed
        self.epochs = 0
        self.steps_per_epoch = 0
        self.global_step = 0
        self.stop_training = False
        for cb in self.callbacks:
            cb.set_trainer(self)

    def fit(
        self, train: MaskDataset, val: MaskDataset | None = None, *, epochs: int, batch_size: int
    ) -> History:
        """Train for ``epochs`` (fewer if a callback stops training).

        Raises:
            TrainingError: the loss became NaN or infinite.
        """
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
        if len(train) == 0:
            raise ValueError(f"{train.name} has no images to train on")
        self.epochs = epochs
        self.steps_per_epoch = -(-len(train) // batch_size)
        total = epochs * self.steps_per_epoch
        scheduler = None
        if self.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
            )
        self.stop_training = False
        logs: dict[str, Any] = {}
        for cb in self.callbacks:
            cb.on_train_begin(logs)
        for epoch in range(epochs):
            for cb in self.callbacks:
                cb.on_epoch_begin(epoch, logs)
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            logs = self._train_epoch(train, batch_size, epoch, scheduler)
            if val is not None and len(val):
                report = self.evaluate(val)
                logs.update(
                    val_loss=report["loss"],
                    val_pixel_accuracy=report["pixel_accuracy"],
                    val_miou=report["miou"],
                )
            logs["lr"] = lr
            logs["seconds"] = time.perf_counter() - start
            for cb in self.callbacks:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in self.callbacks:
            cb.on_train_end(logs)
        return self.history

    def _train_epoch(
        self, data: MaskDataset, batch_size: int, epoch: int, scheduler: Any
    ) -> dict[str, float]:
        self.model.train()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(data), generator=generator)
        loss_sum, correct, counted, seen = 0.0, 0, 0, 0
        for step, start in enumerate(range(0, len(data), batch_size)):
            index = order[start : start + batch_size]
            x = prepare_images(data.images[index], self.device)
            y = data.masks[index].to(self.device).long()
            if self.flip:
                mirror = (torch.rand(len(index), generator=generator) < 0.5).to(self.device)
                x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
                y = torch.where(mirror[:, None, None], y.flip(-1), y)
            with train_autocast(self.device, self.amp):
                logits = self.model(x)
            logits = logits.float()
            loss = self.loss(logits, y)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(
                    f"loss became {value} at epoch {epoch + 1}, step {step + 1}; try a lower --lr"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if scheduler is not None:
                scheduler.step()
            self.global_step += 1
            valid = y != data.ignore_index
            correct += int(((logits.detach().argmax(1) == y) & valid).sum())
            counted += int(valid.sum())
            loss_sum += value * len(index)
            seen += len(index)
            batch_logs = {"loss": loss_sum / seen, "pixel_accuracy": correct / max(counted, 1)}
            for cb in self.callbacks:
                cb.on_batch_end(step, batch_logs)
        return {"loss": loss_sum / max(seen, 1), "pixel_accuracy": correct / max(counted, 1)}

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Predicted classes, int64 Tensor[N, H, W] on the CPU, for uint8 Tensor[N, C, H, W]."""
        self.model.eval()
        outs = [
            self.model(prepare_images(images[i : i + batch_size], self.device)).argmax(1).cpu()
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(outs) if outs else torch.empty(0, *images.shape[-2:], dtype=torch.long)

    @torch.inference_mode()
    def evaluate(self, data: MaskDataset, batch_size: int = 64) -> dict[str, Any]:
        """Mean loss and the SegmentationMetrics scores on ``data`` (eval mode)."""
        self.model.eval()
        metrics = SegmentationMetrics(
            data.num_classes, data.class_names, data.ignore_index, device=self.device
        )
        loss_sum = 0.0
        for start in range(0, len(data), batch_size):
            x = prepare_images(data.images[start : start + batch_size], self.device)
            y = data.masks[start : start + batch_size].to(self.device).long()
            logits = self.model(x)
            loss_sum += float(self.loss(logits, y)) * len(y)
            metrics.update(logits, y)
        report = metrics.compute()
        report["loss"] = loss_sum / max(len(data), 1)
        report["num_images"] = len(data)
        return report
