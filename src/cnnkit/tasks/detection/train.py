"""A short fit loop for the YOLO detector, its evaluation and prediction."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from ...data.scenes import SceneDataset
from ...errors import TrainingError
from ...train.perf import train_autocast
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
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = math.ceil(len(train) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps, pct_start=0.15)
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state, waited = -1.0, 0, None, 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        totals = {"loss": 0.0, "box_loss": 0.0, "objectness_loss": 0.0, "class_loss": 0.0}
        for step in range(steps):
            idx = order[step * batch_size : (step + 1) * batch_size]
            x = to_input(train.images[idx], device)
            boxes, labels, batch = (t.to(device) for t in train.batch_targets(idx))
            if flip:
                x, boxes = _flip_batch(
                    x, boxes, batch, torch.rand(len(idx), generator=generator).to(device) < 0.5
                )
            with train_autocast(device, amp):
                outputs = model(x)
            loss, parts = loss_fn([o.float() for o in outputs], boxes, labels, batch)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {float(loss)} at epoch {epoch}, step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            totals["loss"] += float(loss.detach()) / steps
            for k, v in parts.items():
                totals[k] += v / steps
        logs = {"epoch": epoch, **totals}
        logs.update({f"val_{k}": v for k, v in evaluate_detector(model, val, device).items()})
        logs["seconds"] = time.perf_counter() - start
        history.append(logs)
        if on_epoch_end:
            on_epoch_end(epoch, logs)
        if logs["val_map_50"] > best_score:
            best_score, best_epoch, waited = logs["val_map_50"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if patience is not None and waited > patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return {
        "history": history,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "train_seconds": time.perf_counter() - start,
    }


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
