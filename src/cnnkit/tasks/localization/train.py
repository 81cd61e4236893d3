"""Training (through the engine's Trainer), evaluation and prediction of the Localizer."""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from ...data.scenes import SceneDataset
from ...engine.distributed import World, gather_rows, local_share
from ..detection.fit import fit_task
from ..detection.inputs import to_input
from .loss import paired_iou
from .model import Localizer


def normalized_boxes(data: SceneDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(boxes Tensor[N, 4] as fractions of the image, labels Tensor[N]) of single-object scenes."""
    boxes, labels = data.single_object()
    h, w = data.image_size
    return boxes / torch.tensor([w, h, w, h], dtype=boxes.dtype), labels


def flip_boxes(x: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror the images Tensor[N, C, H, W] where ``mask`` (Tensor[N] bool) is set, with their
    normalised ``xyxy`` boxes Tensor[N, 4]."""
    x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    flipped = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], dim=1)
    return x, torch.where(mask[:, None], flipped, boxes)


def fit_localizer(
    model: Localizer,
    train: SceneDataset,
    val: SceneDataset,
    *,
    box_loss: str = "giou",
    box_weight: float | None = None,
    weight_decay: float = 1e-4,
    flip: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Train ``LocalizeTask`` through the engine's Trainer (``detection.fit.fit_task``): AdamW, a
    one-cycle learning rate, the weights of the best validation epoch kept.

    The best epoch has the highest validation ``accuracy_iou50`` (right class and IoU >= 0.5).
    Horizontal flips (``flip``) are the only augmentation: scenes already vary position and scale.

    Args:
        options: ``fit_task``'s: ``epochs``, ``batch_size``, ``lr``, ``device`` (all required),
            ``patience`` (epochs without a better ``accuracy_iou50``), ``amp``, ``seed``,
            ``on_epoch_end``, ``resume_from`` and the engine's options; its return value and errors too.
    """
    from .task import LocalizeTask  # task.py builds on this module's evaluation

    task = LocalizeTask(box_loss=box_loss, box_weight=box_weight, flip=flip)
    return fit_task(model, task, train, val, weight_decay=weight_decay, **options)


@torch.no_grad()
def predict_localizer(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 256,
    flip_tta: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class, its probability and the box for every image.

    Args:
        model: a Localizer.
        images: uint8 Tensor[N, C, H, W].
        device: where to run.
        batch_size: images per forward pass.
        flip_tta: also run the mirrored image and average the class probabilities and the
            (mirrored back) boxes; the model is trained with flips, so both views are in-distribution.

    Returns:
        labels (Tensor[N]), scores (Tensor[N]) and boxes (Tensor[N, 4], normalised ``xyxy``), on the CPU.
    """
    model.eval()
    labels, scores, boxes = [], [], []
    for start in range(0, len(images), batch_size):
        x = to_input(images[start : start + batch_size], device)
        out = model(x)
        probs, box = out.logits.float().softmax(1), out.boxes.float()
        if flip_tta:
            mirrored = model(x.flip(-1))
            probs = (probs + mirrored.logits.float().softmax(1)) / 2
            _, back = flip_boxes(
                x, mirrored.boxes.float(), torch.ones(len(x), dtype=torch.bool, device=x.device)
            )
            box = (box + back) / 2
        prob, label = probs.max(1)
        labels.append(label.cpu())
        scores.append(prob.cpu())
        boxes.append(box.cpu())
    if not labels:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, 4)
    return torch.cat(labels), torch.cat(scores), torch.cat(boxes)


def evaluate_localizer(
    model: nn.Module,
    data: SceneDataset,
    device: torch.device,
    batch_size: int = 256,
    flip_tta: bool = True,
    world: World | None = None,
) -> dict[str, float]:
    """Localization metrics on single-object scenes (predictions as ``predict_localizer`` makes them).

    Args:
        world: under data-parallel training, each rank predicts its ``local_share`` of the images
            and the predictions are gathered, so every image counts once (every rank must call it).

    Returns:
        ``mean_iou`` (predicted vs true box), ``accuracy`` (class), ``iou50`` (share of boxes with
        IoU >= 0.5) and ``accuracy_iou50`` (right class *and* IoU >= 0.5, ILSVRC's localization
        accuracy), all over the whole set.
    """
    boxes, labels = normalized_boxes(data)
    share = local_share(len(data), world) if world is not None else slice(None)
    pred_labels, _, pred_boxes = predict_localizer(model, data.images[share], device, batch_size, flip_tta)
    if world is not None and world.active:
        pred_labels, pred_boxes = gather_rows(pred_labels, len(data)), gather_rows(pred_boxes, len(data))
    iou = torch.cat(
        [paired_iou(pred_boxes[s : s + 1024], boxes[s : s + 1024]) for s in range(0, len(boxes), 1024)]
    )
    correct = pred_labels == labels
    return {
        "mean_iou": float(iou.mean()),
        "accuracy": float(correct.float().mean()),
        "iou50": float((iou >= 0.5).float().mean()),
        "accuracy_iou50": float((correct & (iou >= 0.5)).float().mean()),
    }


def print_epoch(epoch: int, logs: dict[str, float]) -> None:
    """One line per epoch on stderr."""
    print(
        f"epoch {epoch}: loss {logs['loss']:.4f} (class {logs['class_loss']:.4f}, "
        f"box {logs['box_loss']:.4f}) "
        f"val mean IoU {logs['val_mean_iou']:.3f} accuracy {logs['val_accuracy']:.3f} "
        f"[{logs['seconds']:.0f} s]",
        file=sys.stderr,
        flush=True,
    )
