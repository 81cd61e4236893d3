"""Classification + localization as an engine task: one class and one box per image."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ...data.scenes import SceneDataset
from ...engine.task import StepOutput, Task
from ...engine.trainer import Trainer
from ..detection.inputs import to_input
from .loss import check_box_loss, localization_loss
from .model import LocalizationOutput
from .train import evaluate_localizer, flip_boxes, normalized_boxes


@dataclass
class _Targets:
    """Single-object scenes with their targets computed once per fit."""

    data: SceneDataset
    boxes: torch.Tensor  # Tensor[N, 4] normalised xyxy
    labels: torch.Tensor  # Tensor[N]


class LocalizeTask(Task):
    """Cross-entropy for the class + a box loss for single-object scenes (``SceneDataset``).

    Validation scores ``evaluate_localizer``'s metrics; the best epoch has the highest
    ``accuracy_iou50`` (right class and IoU >= 0.5, ILSVRC's localization accuracy).

    Args:
        box_loss: box loss name (see ``localization.loss.BOX_LOSSES``).
        box_weight: weight of the box term; None takes the loss's default.
        flip: mirror half the training images (drawn from the engine's generator), the only
            augmentation: scenes already vary position and scale.
    """

    name = "localize"
    monitor = "val_accuracy_iou50"
    shown = ("loss", "class_loss", "box_loss", "val_mean_iou", "val_accuracy", "val_accuracy_iou50")

    def __init__(self, *, box_loss: str = "giou", box_weight: float | None = None, flip: bool = True) -> None:
        self.box_loss = check_box_loss(box_loss)
        self.box_weight = box_weight
        self.flip = flip

    def prepare_fit(self, trainer: Trainer, data: SceneDataset) -> _Targets:
        boxes, labels = normalized_boxes(data)
        return _Targets(data, boxes, labels)

    def batches(
        self, trainer: Trainer, data: _Targets, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        device = trainer.device
        order = torch.randperm(len(data.labels), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x = to_input(data.data.images[idx], device)
            labels, boxes = data.labels[idx].to(device), data.boxes[idx].to(device)
            if self.flip:
                mask = torch.rand(len(idx), generator=generator).to(device) < 0.5
                x, boxes = flip_boxes(x, boxes, mask)
            yield x, labels, boxes

    def train_step(
        self, trainer: Trainer, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> StepOutput:
        x, labels, boxes = batch
        out = trainer.forward(x)
        out = LocalizationOutput(out.logits.float(), out.boxes.float())
        loss, parts = localization_loss(out, labels, boxes, self.box_loss, self.box_weight)
        return {"loss": loss, "n": len(labels), **parts}

    def validate(self, trainer: Trainer, data: SceneDataset) -> dict[str, float]:
        """``mean_iou``, ``accuracy``, ``iou50`` and ``accuracy_iou50`` (flip TTA, as in prediction);
        under data-parallel training each rank predicts its share of the images."""
        return evaluate_localizer(trainer.model, data, trainer.device, world=trainer.world)

    def evaluate(self, trainer: Trainer, data: SceneDataset) -> dict[str, Any]:
        """The test report: the validation metrics over ``data``."""
        return self.validate(trainer, data)
