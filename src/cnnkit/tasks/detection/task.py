"""YOLO-style detection as an engine task: boxes, objectness and classes on anchor grids."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ...data.scenes import SceneDataset
from ...engine.distributed import World, shard_range
from ...engine.task import StepOutput, Task
from ...engine.trainer import Trainer
from .inputs import to_input
from .loss import YoloLoss
from .train import evaluate_detector, flip_batch

# A batch: images Tensor[N, C, H, W], then boxes Tensor[M, 4], labels Tensor[M] and the image
# index Tensor[M] of every object of the batch.
DetectBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class DetectTask(Task):
    """``YoloLoss`` (box GIoU + objectness + class) on multi-object scenes (``SceneDataset``).

    Validation scores COCO mAP (``evaluate_detector``); the best epoch has the highest mAP@0.5.

    Args:
        loss_fn: the detector's loss (its anchors and strides).
        flip: mirror half the training images (drawn from the engine's generator).
    """

    name = "detect"
    monitor = "val_map_50"
    shown = ("loss", "box_loss", "objectness_loss", "class_loss", "val_map_50", "val_map")

    def __init__(self, loss_fn: YoloLoss, *, flip: bool = True) -> None:
        self.loss_fn = loss_fn
        self.flip = flip

    def batches(
        self, trainer: Trainer, data: SceneDataset, batch_size: int, generator: torch.Generator
    ) -> Iterator[DetectBatch]:
        device = trainer.device
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x = to_input(data.images[idx], device)
            boxes, labels, batch = (t.to(device) for t in data.batch_targets(idx))
            if self.flip:
                mask = torch.rand(len(idx), generator=generator).to(device) < 0.5
                x, boxes = flip_batch(x, boxes, batch, mask)
            yield x, boxes, labels, batch

    def shard(self, batch: DetectBatch, world: World) -> tuple[DetectBatch, int, int]:
        """Rank's images and the objects in them (image indices counted from its first image)."""
        x, boxes, labels, index = batch
        start, stop = shard_range(len(x), world.rank, world.size)
        keep = (index >= start) & (index < stop)
        return (x[start:stop], boxes[keep], labels[keep], index[keep] - start), stop - start, len(x)

    def train_step(self, trainer: Trainer, batch: DetectBatch) -> StepOutput:
        x, boxes, labels, index = batch
        outputs = trainer.forward(x)
        loss, parts = self.loss_fn([o.float() for o in outputs], boxes, labels, index)
        return {"loss": loss, "n": len(x), **parts}

    def validate(self, trainer: Trainer, data: SceneDataset) -> dict[str, float]:
        """``map`` (mAP@[.5:.95]), ``map_50``, ``map_75`` and ``mar_100``; under data-parallel
        training each rank predicts its share of the images."""
        return evaluate_detector(trainer.model, data, trainer.device, world=trainer.world)

    def evaluate(self, trainer: Trainer, data: SceneDataset) -> dict[str, Any]:
        """The validation metrics and ``ap_per_class`` (mAP@[.5:.95] by class name)."""
        report = evaluate_detector(
            trainer.model, data, trainer.device, class_metrics=True, world=trainer.world
        )
        names = data.class_names
        report["ap_per_class"] = {names[k]: v for k, v in report["ap_per_class"].items()}
        return report
