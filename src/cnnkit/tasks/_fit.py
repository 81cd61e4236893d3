"""The fit loop the localization and detection tasks share: AdamW, a one-cycle learning rate,
per-epoch validation and the best epoch's weights kept."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import TrainingError


def fit_one_cycle(
    model: nn.Module,
    num_train: int,
    batch_loss: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]],
    validate: Callable[[], dict[str, float]],
    *,
    score: str,
    loss_parts: tuple[str, ...],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int | None = None,
    generator: torch.Generator | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` (already on its device) for up to ``epochs``.

    Args:
        model: the task model.
        num_train: training samples; each epoch visits them in a new random order.
        batch_loss: maps the batch's sample indices (Tensor[B]) to (loss, its parts as floats);
            it fetches, augments and runs the batch.
        validate: the validation metrics, run after every epoch; they enter the logs with a
            ``val_`` prefix.
        score: the validation metric (without ``val_``) whose best epoch is kept; higher is better.
        loss_parts: the names ``batch_loss`` reports besides the total, averaged per epoch.
        patience: stop after this many epochs without a better score (None: never).
        generator: the random order's generator (``batch_loss`` may draw from it too).
        on_epoch_end: called with (epoch from 1, logs).

    Returns:
        ``{"history": [per-epoch dict], "best_epoch": int, "epochs_run": int, "train_seconds": float}``;
        the model holds the best weights afterwards.

    Raises:
        TrainingError: the loss became NaN or infinite.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = math.ceil(num_train / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps, pct_start=0.15)
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state, waited = -1.0, 0, None, 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(num_train, generator=generator)
        totals = dict.fromkeys(("loss", *loss_parts), 0.0)
        for step in range(steps):
            loss, parts = batch_loss(order[step * batch_size : (step + 1) * batch_size])
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {float(loss)} at epoch {epoch}, step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            totals["loss"] += float(loss.detach()) / steps
            for k, v in parts.items():
                totals[k] += v / steps
        logs = {"epoch": epoch, **totals, **{f"val_{k}": v for k, v in validate().items()}}
        logs["seconds"] = time.perf_counter() - start
        history.append(logs)
        if on_epoch_end:
            on_epoch_end(epoch, logs)
        if logs[f"val_{score}"] > best_score:
            best_score, best_epoch, waited = logs[f"val_{score}"], epoch, 0
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
