"""What every run does before it builds its model: pick the device and the CPU threads."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..engine.device import pick_device
from ..engine.perf import pick_num_threads, set_threads


def prepare_device(
    spec: str | None, resume_state: dict[str, Any] | None, pick_threads: bool = True
) -> torch.device:
    """The run's device, with torch's intra-op threads set for it.

    Args:
        spec: the config's device (None picks CUDA / MPS / CPU).
        resume_state: the verified ``last.ckpt`` of a resumed run; its thread count is put back,
            since a run resumes bit-identical only with its own count.
        pick_threads: on the CPU, take the cores other processes leave free (an explicit
            ``OMP_NUM_THREADS`` is the user's choice and wins).
    """
    device = pick_device(spec)
    if pick_threads and device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # On a shared machine, threads that wait for busy cores stall every op (docs/performance.md).
        set_threads(pick_num_threads())
    if resume_state is not None and "num_threads" in resume_state:
        set_threads(int(resume_state["num_threads"]))
    return device


__all__ = ["prepare_device"]
