"""Learning-rate schedules as factories ``(optimizer, total_steps) -> scheduler`` for the Trainer."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LRScheduler, OneCycleLR

SchedulerFactory = Callable[[torch.optim.Optimizer, int], LRScheduler]


def one_cycle(
    max_lr: float,
    *,
    pct_start: float = 0.25,
    div_factor: float = 10.0,
    final_div_factor: float = 100.0,
    anneal: str = "linear",
) -> SchedulerFactory:
    """Smith's one-cycle policy (warm up to ``max_lr``, then anneal), stepped once per batch.

    A thin wrapper over ``torch.optim.lr_scheduler.OneCycleLR`` that waits for the step count,
    which the Trainer knows only when ``fit`` starts.

    Args:
        max_lr: peak learning rate.
        pct_start: fraction of the steps spent warming up.
        div_factor: start at ``max_lr / div_factor``.
        final_div_factor: end at ``max_lr / div_factor / final_div_factor``.
        anneal: ``'linear'`` or ``'cos'``.

    Raises:
        ValueError: a non-positive ``max_lr``, ``pct_start`` outside (0, 1) or an unknown ``anneal``.
    """
    if max_lr <= 0:
        raise ValueError(f"max_lr must be > 0, got {max_lr!r}")
    if not 0.0 < pct_start < 1.0:
        raise ValueError(f"pct_start must be between 0 and 1, got {pct_start!r}")
    if anneal not in ("linear", "cos"):
        raise ValueError(f"anneal must be 'linear' or 'cos', got {anneal!r}")

    def build(optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        # OneCycleLR divides by the warm-up length in steps: a tiny run (a few batches) gets a
        # schedule just long enough for one warm-up step, and stops before it has annealed.
        steps = max(total_steps, int(2 / pct_start) + 2)
        return OneCycleLR(
            optimizer,
            max_lr=max_lr,
            total_steps=steps,
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            anneal_strategy=anneal,
        )

    return build
