"""Training (through the engine's Trainer), evaluation and prediction of the YOLO detector."""

from __future__ import annotations

import sys
from typing import Any

import torch

from ...data.scenes import SceneDataset
from ...engine.distributed import World, gather_lists, local_share
from .fit import fit_task
from .inputs import to_input
from .loss import YoloLoss
from .metrics import mean_average_precision
from .model import YoloDetector


def flip_batch(
    x: torch.Tensor, boxes: torch.Tensor, batch: torch.Tensor, flip: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror the images Tensor[N, C, H, W] where ``flip`` (Tensor[N] bool) is set, and their
    boxes (Tensor[M, 4] ``xyxy`` pixels; ``batch`` Tensor[M] is the image of each)."""
    width = x.shape[-1]
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    mirrored = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    return x, torch.where(flip[batch][:, None], mirrored, boxes)


def fit_detector(
    model: YoloDetector,
    loss_fn: YoloLoss,
    train: SceneDataset,
    val: SceneDataset,
    *,
    weight_decay: float = 5e-4,
    flip: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Train ``DetectTask`` through the engine's Trainer (``detection.fit.fit_task``): AdamW, a
    one-cycle learning rate, the weights of the best validation mAP@0.5 kept.

    Args:
        flip: mirror half the training images (drawn from the engine's seeded generator).
        options: ``fit_task``'s: ``epochs``, ``batch_size``, ``lr``, ``device`` (all required),
            ``patience`` (epochs without a better ``map_50``), ``amp``, ``seed``, ``on_epoch_end``,
            ``resume_from`` and the engine's options; its return value and errors too.
    """
    from .task import DetectTask  # task.py builds on this module's evaluation

    return fit_task(model, DetectTask(loss_fn, flip=flip), train, val, weight_decay=weight_decay, **options)


@torch.no_grad()
def predict_detector(
    model: YoloDetector,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 128,
    **options: Any,
) -> list[dict[str, torch.Tensor]]:
    """Detections for uint8 images Tensor[N, C, H, W]; ``options`` go to ``YoloDetector.predict``.

    Returns:
        One ``{"boxes", "scores", "labels"}`` dict per image, on the CPU.
    """
    model.eval()
    results = []
    for start in range(0, len(images), batch_size):
        for det in model.predict(to_input(images[start : start + batch_size], device), **options):
            results.append({k: v.cpu() for k, v in det.items()})
    return results


def evaluate_detector(
    model: YoloDetector,
    data: SceneDataset,
    device: torch.device,
    batch_size: int = 128,
    class_metrics: bool = False,
    world: World | None = None,
) -> dict[str, Any]:
    """COCO mAP@[.5:.95], mAP@0.5, mAP@0.75 and recall of the detector on ``data``.

    Args:
        world: under data-parallel training, each rank predicts its ``local_share`` of the images
            and every rank scores all of them, gathered in order (every rank must call it).
    """
    share = local_share(len(data), world) if world is not None else slice(None)
    predictions = predict_detector(model, data.images[share], device, batch_size)
    if world is not None and world.active:
        predictions = gather_lists(predictions)
    targets = [data.target(i) for i in range(len(data))]
    return mean_average_precision(predictions, targets, class_metrics=class_metrics)


def print_epoch(epoch: int, logs: dict[str, float]) -> None:
    """One line per epoch on stderr."""
    print(
        f"epoch {epoch}: loss {logs['loss']:.3f} (box {logs['box_loss']:.3f}, objectness "
        f"{logs['objectness_loss']:.3f}, class {logs['class_loss']:.3f}) "
        f"val mAP@0.5 {logs['val_map_50']:.3f} "
        f"mAP@[.5:.95] {logs['val_map']:.3f} [{logs['seconds']:.0f} s]",
        file=sys.stderr,
        flush=True,
    )
