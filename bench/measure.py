"""Timing, machine-peak and FLOP-count helpers for the benchmark suite."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
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


def _best_rate(fn: Callable[[], Any], flops: float, repeats: int, seconds: float) -> float:
    """Best GFLOP/s of ``fn`` over ``repeats`` windows of ``seconds`` each."""
    fn()
    best = 0.0
    for _ in range(repeats):
        k = 0
        start = time.perf_counter()
        while True:
            fn()
            k += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, flops * k / elapsed / 1e9)
    return best


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5, seconds: float = 0.3) -> float:
    """Best achieved GFLOP/s of an n×n×n matmul on the CPU (PyTorch's BLAS for FP32)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    return _best_rate(lambda: a @ b, 2 * n**3, repeats, seconds)


def conv1x1_peak(
    dtype: torch.dtype, rows: int = 4096, k: int = 1024, n: int = 1024, repeats: int = 5, seconds: float = 0.3
) -> float:
    """Best achieved GFLOP/s of a GEMM run as a 1×1 convolution in channels-last (oneDNN's
    generated AVX-512 / AMX kernels): ``rows`` pixels × ``k`` input × ``n`` output channels.

    The BLAS behind ``torch.mm`` may not use a CPU's full vector width: on this project's AMD
    machine its FP32 matmul reached 202 GFLOP/s on 2 threads where this probe reached 464
    (with FP32 rounding errors, checked against float64), so the peak is the best of both."""
    side = int(rows**0.5)
    x = torch.randn(1, k, side, side).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, k, 1, 1).to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return _best_rate(lambda: F.conv2d(x, w), 2 * side * side * k * n, repeats, seconds)


def peak_probe() -> dict[str, float]:
    """GFLOP/s of each probe and dtype with the current thread count, and the best per dtype
    (``fp32``, ``bf16``): the machine's measured peak. BF16 only where the CPU has it natively:
    emulated, its probes took minutes on an AVX2 EPYC (18 GFLOP/s) and no default uses it."""
    from cnnkit.engine.perf import cpu_has_bf16

    out: dict[str, Any] = {}
    dtypes = [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if cpu_has_bf16() else [])
    for name, dtype in dtypes:
        out[f"{name}_matmul"] = gemm_peak(dtype)
        out[f"{name}_conv1x1"] = conv1x1_peak(dtype)
        out[name] = max(out[f"{name}_matmul"], out[f"{name}_conv1x1"])
    return out


def cpu_identity() -> dict[str, Any]:
    """Vendor, family, model and name as /proc/cpuinfo gives them (Linux; empty elsewhere):
    the family tells CPU generations apart (AMD family 25 = Zen 3/4, 26 = Zen 5)."""
    keys = {"vendor_id": "vendor", "cpu family": "family", "model": "model", "model name": "name"}
    out: dict[str, Any] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    out[keys[key.strip()]] = value.strip()
    except OSError:
        pass
    return out


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
