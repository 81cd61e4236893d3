"""A short fit loop for the YOLO detector, its evaluation and prediction."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

from ...data.scenes import SceneDataset
from ...engine.perf import train_autocast
from .._fit import fit_one_cycle
from .loss import YoloLoss
from .metrics import mean_average_precision
from .model import YoloDetector
from .runs import to_input


def _flip_batch(
    x: torch.Tensor, boxes: torch.Tensor, batch: torch.Tensor, flip: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror the images where ``flip`` (Tensor[N] bool) is set, and their boxes (Tensor[M, 4])."""
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
    epochs: int,
    batch_size: int,
    lr: float,
    device: torch.device,
    weight_decay: float = 5e-4,
    patience: int | None = None,
    flip: bool = True,
    amp: str | None = None,
    generator: torch.Generator | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train with AdamW and a one-cycle learning rate; keep the weights of the best validation mAP@0.5.

    ``amp='bf16'`` runs the training forward passes under bf16 autocast (see ``train.perf``).

    Returns:
        ``{"history": [per-epoch dict], "best_epoch": int, "epochs_run": int, "train_seconds": float}``;
        the model holds the best weights afterwards.

    Raises:
        TrainingError: the loss became NaN or infinite.
    """
    model.to(device).to(memory_format=torch.channels_last)

    def batch_loss(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        x = to_input(train.images[idx], device)
        boxes, labels, batch = (t.to(device) for t in train.batch_targets(idx))
        if flip:
            mask = torch.rand(len(idx), generator=generator).to(device) < 0.5
            x, boxes = _flip_batch(x, boxes, batch, mask)
        with train_autocast(device, amp):
            outputs = model(x)
        return loss_fn([o.float() for o in outputs], boxes, labels, batch)

    return fit_one_cycle(
        model,
        len(train),
        batch_loss,
        lambda: evaluate_detector(model, val, device),
        score="map_50",
        loss_parts=("box_loss", "objectness_loss", "class_loss"),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        generator=generator,
        on_epoch_end=on_epoch_end,
    )


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
) -> dict[str, Any]:
    """COCO mAP@[.5:.95], mAP@0.5, mAP@0.75 and recall of the detector on ``data``."""
    predictions = predict_detector(model, data.images, device, batch_size)
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
