"""Semantic segmentation as an engine task: images in, one class per pixel out (FCN, U-Net)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from ...data.masks import MaskDataset
from ...engine.distributed import local_share, sum_across
from ...engine.task import StepOutput, Task
from ...engine.trainer import Trainer
from .loss import SegmentationLoss
from .metrics import SegmentationMetrics


def prepare_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 Tensor[N, C, H, W] -> float Tensor on ``device`` scaled to [0, 1]."""
    x = images.to(device, non_blocking=True)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def cosine_decay(optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
    """A scheduler factory for the Trainer: the learning rate decays to 0 along a half cosine
    over ``total_steps`` batches (no warm-up)."""
    total = max(total_steps, 1)
    return LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


def _float32(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    # The pixel loss stays float32 under the engine's autocast (the logits are cast up first).
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


class SegmentTask(Task):
    """A pixel loss on logits Tensor[N, K, H, W] for a ``MaskDataset`` (masks Tensor[N, H, W]).

    Epoch logs: ``loss``, ``pixel_accuracy`` (of the training batches, ignored pixels left
    out), and with validation data ``val_loss``, ``val_pixel_accuracy``, ``val_miou``.

    Args:
        loss: the pixel loss (default: cross-entropy ignoring 255).
        flip: randomly mirror training images left-right with their masks; the coin flips are
            drawn from the engine's epoch generator, after the batch order.
    """

    name = "segment"
    monitor = "val_miou"
    shown = ("loss", "pixel_accuracy", "val_loss", "val_miou")

    def __init__(self, *, loss: nn.Module | None = None, flip: bool = True) -> None:
        self.loss = loss if loss is not None else SegmentationLoss()
        self.flip = flip

    def prepare(self, trainer: Trainer, images: torch.Tensor) -> torch.Tensor:
        """uint8 Tensor[N, C, H, W] -> float on the trainer's device (channels-last if it is)."""
        x = prepare_images(images, trainer.device)
        if trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def batches(
        self, trainer: Trainer, data: MaskDataset, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), batch_size):
            index = order[start : start + batch_size]
            x = self.prepare(trainer, data.images[index])
            y = data.masks[index].to(trainer.device).long()
            if self.flip:
                mirror = (torch.rand(len(index), generator=generator) < 0.5).to(trainer.device)
                x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
                y = torch.where(mirror[:, None, None], y.flip(-1), y)
            yield x, y, data.ignore_index

    def train_step(self, trainer: Trainer, batch: tuple[torch.Tensor, torch.Tensor, int]) -> StepOutput:
        x, y, ignore_index = batch
        logits = trainer.forward(x).float()
        with _float32(trainer.device, trainer.amp):
            loss = self.loss(logits, y)
        valid = y != ignore_index
        correct = int(((logits.detach().argmax(1) == y) & valid).sum())
        out = {"loss": loss, "n": len(y), "pixel_accuracy": (correct, int(valid.sum()))}
        if isinstance(self.loss, SegmentationLoss) and not self.loss.dice_weight:
            out["loss_units"] = int(valid.sum())  # cross-entropy: a mean over the labelled pixels
        return out

    @torch.inference_mode()
    def predict(self, trainer: Trainer, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Predicted classes, int64 Tensor[N, H, W] on the CPU, for uint8 Tensor[N, C, H, W]."""
        trainer.model.eval()
        outs = []
        with trainer.forward.inference():
            for start in range(0, len(images), batch_size):
                x = self.prepare(trainer, images[start : start + batch_size])
                outs.append(trainer.forward(x).argmax(1).cpu())
        return torch.cat(outs) if outs else torch.empty(0, *images.shape[-2:], dtype=torch.long)

    def validate(self, trainer: Trainer, data: MaskDataset) -> dict[str, float]:
        report = self.evaluate(trainer, data)
        return {"loss": report["loss"], "pixel_accuracy": report["pixel_accuracy"], "miou": report["miou"]}

    @torch.inference_mode()
    def evaluate(self, trainer: Trainer, data: MaskDataset, batch_size: int = 64) -> dict[str, Any]:
        """Mean loss and the SegmentationMetrics scores on ``data`` (eval mode, float32).

        Under data-parallel training each rank scores its ``local_share`` of the images; the
        confusion counts and loss sums are added up over the ranks (every rank must call it).
        """
        trainer.model.eval()
        metrics = SegmentationMetrics(
            data.num_classes, data.class_names, data.ignore_index, device=trainer.device
        )
        loss_sum = 0.0
        share = local_share(len(data), trainer.world)
        with trainer.forward.inference():
            for start in range(share.start, share.stop, batch_size):
                stop = min(start + batch_size, share.stop)
                x = self.prepare(trainer, data.images[start:stop])
                y = data.masks[start:stop].to(trainer.device).long()
                logits = trainer.forward(x).float()
                loss_sum += float(self.loss(logits, y)) * len(y)
                metrics.update(logits, y)
        if trainer.world.active:
            metrics.sum_across_ranks()
            (loss_sum,) = sum_across([loss_sum])
        report = metrics.compute()
        report["loss"] = loss_sum / max(len(data), 1)
        report["num_images"] = len(data)
        return report


__all__ = ["SegmentTask", "cosine_decay", "prepare_images"]
