"""Instance segmentation as an engine task: torchvision's Mask R-CNN on FashionScenes.

In train mode a torchvision Mask R-CNN returns its five losses (``loss_classifier``,
``loss_box_reg``, ``loss_mask``, ``loss_objectness``, ``loss_rpn_box_reg``); a step minimises
their sum, and the epoch logs show each one. Validation scores are COCO mask and box mAP.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler
from torchvision.models import detection

from ...data.scenes import SceneDataset
from ...engine.callbacks import History
from ...engine.distributed import gather_lists, local_share
from ...engine.schedules import SchedulerFactory
from ...engine.task import StepOutput, Task
from ...engine.trainer import Trainer
from .instance import instance_targets, to_model_inputs

Batch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]


def warmup_cosine(max_warmup: int = 100, max_steps: int | None = None) -> SchedulerFactory:
    """A scheduler factory: linear warm-up over the first ``min(max_warmup, total / 4 + 1)``
    steps, then cosine decay to 0 at the end of the run.

    Args:
        max_warmup: longest warm-up in steps.
        max_steps: if set and shorter, the run's length in steps (instead of the Trainer's).
    """

    def build(optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        total = max(1, min(total_steps, max_steps or total_steps))
        warmup = min(max_warmup, total // 4 + 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total) / max(total - warmup, 1)))

        return LambdaLR(optimizer, factor)

    return build


class _Prepared(NamedTuple):
    scenes: SceneDataset
    targets: list[dict[str, torch.Tensor]]


class MaskRCNNTask(Task):
    """torchvision Mask R-CNN on ``SceneDataset``s (targets from ``instance_targets``).

    Epoch logs: ``loss`` (sum of the five Mask R-CNN losses), each loss by name, and with
    validation data ``val_segm_map`` / ``val_bbox_map`` (COCO mAP@[.5:.95]).

    Args:
        in_chans: channels the model takes (grayscale scenes are repeated to 3).
        max_steps: stop training after so many batches in all (None: run every epoch).
        mask_threshold: mask probability above which a pixel belongs to a detection.
    """

    name = "segment"
    monitor = "val_segm_map"
    shown = ("loss", "loss_mask", "val_segm_map", "val_bbox_map")

    def __init__(
        self, *, in_chans: int = 3, max_steps: int | None = None, mask_threshold: float = 0.5
    ) -> None:
        self.in_chans = in_chans
        self.max_steps = max_steps
        self.mask_threshold = mask_threshold

    @property
    def max_steps(self) -> int | None:
        """Batches to train in all before stopping (None: every epoch); checked when set."""
        return self._max_steps

    @max_steps.setter
    def max_steps(self, value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {value!r}")
        self._max_steps = value

    def prepare_fit(self, trainer: Trainer, data: SceneDataset) -> _Prepared:
        """The scenes with their targets, computed once per fit (on the CPU)."""
        return _Prepared(data, [instance_targets(data, i) for i in range(len(data))])

    def batches(
        self, trainer: Trainer, data: _Prepared, batch_size: int, generator: torch.Generator
    ) -> Iterator[Batch]:
        scenes, targets = data
        order = torch.randperm(len(scenes), generator=generator)
        for begin in range(0, len(scenes), batch_size):
            index = order[begin : begin + batch_size]
            images = to_model_inputs(scenes.images[index], self.in_chans, trainer.device)
            batch = [{k: v.to(trainer.device) for k, v in targets[int(i)].items()} for i in index]
            yield images, batch
            # The engine has no step limit: the task ends the epoch, and stop_training the fit
            # (the engine checks it after the epoch, as it does for early stopping).
            if self.max_steps is not None and trainer.global_step >= self.max_steps:
                trainer.stop_training = True
                return

    def train_step(self, trainer: Trainer, batch: Batch) -> StepOutput:
        images, targets = batch
        # Through the engine's forward: under data-parallel training it averages the gradients.
        losses = trainer.forward(images, lambda net, x: net(x, targets))
        parts = {k: float(v.detach()) for k, v in losses.items()}
        return {"loss": sum(losses.values()), "n": len(images), **parts}

    @torch.inference_mode()
    def predict(
        self, trainer: Trainer, images: torch.Tensor, batch_size: int = 16
    ) -> list[dict[str, torch.Tensor]]:
        """Detections for uint8 Tensor[N, C, H, W], on the CPU.

        Returns:
            One dict per image: ``boxes`` Tensor[D, 4], ``labels`` Tensor[D] (class + 1),
            ``scores`` Tensor[D], ``masks`` float Tensor[D, 1, H, W] (probabilities).
        """
        trainer.model.eval()
        out: list[dict[str, torch.Tensor]] = []
        for begin in range(0, len(images), batch_size):
            batch = to_model_inputs(images[begin : begin + batch_size], self.in_chans, trainer.device)
            out += [{k: v.cpu() for k, v in d.items()} for d in trainer.model(batch)]
        return out

    def validate(self, trainer: Trainer, data: SceneDataset) -> dict[str, float]:
        report = self.evaluate(trainer, data)
        return {"segm_map": report["segm"]["map"], "bbox_map": report["bbox"]["map"]}

    def evaluate(
        self,
        trainer: Trainer,
        data: SceneDataset,
        batch_size: int = 16,
        mask_threshold: float | None = None,
    ) -> dict[str, Any]:
        """COCO-style mask and box mAP (torchmetrics MeanAveragePrecision) on ``data``.

        Args:
            mask_threshold: overrides the task's ``mask_threshold``.

        Returns:
            ``{"segm": {...}, "bbox": {...}, "num_images"}``; each part has ``map``,
            ``map_50``, ``map_75``, ``map_small``/``medium``/``large`` and ``mar_100``.
        """
        from torchmetrics.detection import MeanAveragePrecision

        threshold = self.mask_threshold if mask_threshold is None else mask_threshold
        # The lists below are the whole set: no second gathering by torchmetrics in compute().
        metric = MeanAveragePrecision(iou_type=("bbox", "segm"), sync_on_compute=False)
        # Under data-parallel training each rank predicts its share; all ranks score every image.
        preds = [
            {**{k: p[k] for k in ("boxes", "scores", "labels")}, "masks": p["masks"][:, 0] > threshold}
            for p in self.predict(trainer, data.images[local_share(len(data), trainer.world)], batch_size)
        ]
        if trainer.world.active:
            preds = gather_lists(preds)
        for i, pred in enumerate(preds):
            truth = instance_targets(data, i)
            metric.update(
                [pred],
                [{"boxes": truth["boxes"], "labels": truth["labels"], "masks": truth["masks"].bool()}],
            )
        scores = metric.compute()
        keys = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")
        report: dict[str, Any] = {
            kind: {k: float(scores[f"{kind}_{k}"]) for k in keys} for kind in ("segm", "bbox")
        }
        report["num_images"] = len(data)
        return report


class MaskRCNNTrainer(Trainer):
    """The engine's Trainer with the Mask R-CNN task, for a model from ``build_mask_rcnn``.

    Args:
        model: from ``build_mask_rcnn``.
        task: a ready MaskRCNNTask (default: one for the model's ``in_chans``).
        **engine_options: ``cnnkit.engine.Trainer``'s options, with Mask R-CNN's defaults:
            ``optimizer="adamw"``, ``weight_decay=1e-4`` and, as ``scheduler``, a linear warm-up
            over the first 100 steps to ``lr`` then cosine decay. ``seed`` seeds the batch
            order (torchvision's RoI sampling draws from torch's global RNG, which checkpoints
            keep too).
    """

    task: MaskRCNNTask

    def __init__(
        self, model: detection.MaskRCNN, task: MaskRCNNTask | None = None, **engine_options: Any
    ) -> None:
        if task is None:
            task = MaskRCNNTask(in_chans=int(getattr(model, "in_chans", 3)))
        defaults = {"optimizer": "adamw", "weight_decay": 1e-4, "scheduler": self._warmup_cosine}
        super().__init__(model, task, **{**defaults, **engine_options})

    @property
    def in_chans(self) -> int:
        return self.task.in_chans

    def _warmup_cosine(self, optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        # Built when fit starts: the run is then as long as the task's max_steps, if shorter.
        return warmup_cosine(max_steps=self.task.max_steps)(optimizer, total_steps)

    def fit(
        self,
        train: SceneDataset,
        val: SceneDataset | None = None,
        *,
        epochs: int = 4,
        batch_size: int = 8,
        max_steps: int | None = None,
        **fit_options: Any,
    ) -> History:
        """Train for ``epochs`` (or ``max_steps`` batches in all, if fewer); see ``Trainer.fit``."""
        if max_steps is not None:
            self.task.max_steps = max_steps
        return super().fit(train, val, epochs=epochs, batch_size=batch_size, **fit_options)

    def predict(self, images: torch.Tensor, batch_size: int = 16) -> list[dict[str, torch.Tensor]]:
        """Detections for uint8 Tensor[N, C, H, W], on the CPU (see ``MaskRCNNTask.predict``)."""
        return self.task.predict(self, images, batch_size)

    def evaluate(
        self, data: SceneDataset, batch_size: int = 16, mask_threshold: float | None = None
    ) -> dict[str, Any]:
        """COCO-style mask and box mAP on ``data`` (see ``MaskRCNNTask.evaluate``)."""
        return self.task.evaluate(self, data, batch_size, mask_threshold)


__all__ = ["MaskRCNNTask", "MaskRCNNTrainer", "warmup_cosine"]
