"""Training precision by name: ``auto``, ``bf16`` or ``fp32``, as the Trainer's ``amp`` and
``channels_last``.

``fp32`` is the course's numerics exactly (float32, NCHW). ``bf16`` runs each training
forward pass under bf16 autocast with the model and images channels-last (oneDNN's fast
kernels); losses, optimizer steps and evaluation stay float32. ``auto`` is ``bf16`` where the
device computes bf16 natively (a CPU with AVX512_BF16 or AMX-BF16, a CUDA GPU with bf16) and
``fp32`` elsewhere: emulated bf16 is slower than float32.
"""

from __future__ import annotations

import torch

from ..errors import UsageError, warn_caller
from .perf import cpu_has_bf16, pick_perf_settings

PRECISIONS = ("auto", "bf16", "fp32")


def precision_settings(precision: str, device: torch.device) -> tuple[str | None, bool]:
    """``(amp, channels_last)`` for ``precision`` on ``device``; ``bf16`` asked for on a CPU
    without native bf16 gives one warning (it runs, emulated: a course CNN epoch took 12.9 s against fp32's
    1.6 s on an AVX2 EPYC, 2026-12-07).

    Raises:
        UsageError: a precision not in PRECISIONS.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":  # one thread: the choice does not depend on the load
        precision = "bf16" if pick_perf_settings(device, num_threads=1).amp == "bf16" else "fp32"
    elif precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        warn_caller(
            "--precision bf16: this CPU has no native bf16 (AVX512_BF16 or AMX-BF16): bf16 is "
            "emulated, and the course CNN trained 7.8x slower than in fp32 on such a CPU; "
            "--precision auto picks fp32 here"
        )
    return ("bf16", True) if precision == "bf16" else (None, False)


def precision_name(amp: str | None, channels_last: bool) -> str:
    """What a run's ``amp`` / ``channels_last`` settings amount to: ``fp32``, ``bf16`` or
    ``fp16``, with ``+channels-last`` where the memory format differs from the precision's own."""
    name = amp or "fp32"
    if channels_last != (name != "fp32"):
        name += "+channels-last" if channels_last else "+nchw"
    return name
