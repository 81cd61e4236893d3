"""Timing, machine-peak and FLOP-count helpers for the benchmark suite."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.inspect.summary import summary


def load() -> float:
    """1-minute load average (the machine is shared: every figure is recorded with it)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return float("nan")


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """Run ``fn`` ``warmup`` + ``repeats`` times; seconds of each timed run, best and median.

    The best run is the least disturbed by the other processes on a shared machine; the median
    says how disturbed they were.
    """
    for _ in range(warmup):
        fn()
    times = []
    loads = [load()]
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        loads.append(load())
    return {"seconds": times, "best": min(times), "median": statistics.median(times), "load": loads}


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5, seconds: float = 0.3) -> float:
    """Best achieved GFLOP/s of an n×n×n matmul on the CPU (the machine's practical peak)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    flops = 2 * n**3
    best = 0.0
    for _ in range(repeats):
        k = 0
        start = time.perf_counter()
        while True:
            a @ b
            k += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, flops * k / elapsed / 1e9)
    return best


def forward_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, float]:
    """Forward FLOPs per image from the summary's MACs (×2) and from FlopCounterMode."""
    macs = summary(model, input_shape).total_macs
    x = torch.zeros(1, *input_shape)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return {"summary": 2.0 * macs, "flop_counter": float(counter.get_total_flops())}


def train_step_flops(model: nn.Module, input_shape: tuple[int, int, int], batch: int = 2) -> float:
    """Forward + backward FLOPs per image of one training step, by FlopCounterMode.

    Backward costs about twice the forward pass, less the input gradient of the first layer,
    which is never needed.
    """
    x = torch.zeros(batch, *input_shape)
    y = torch.zeros(batch, dtype=torch.long)
    was_training = model.training
    model.train()
    with FlopCounterMode(display=False) as counter:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return counter.get_total_flops() / batch
