"""What every run does before it builds its model: pick the device, join the process group of a
data-parallel run, and set the CPU threads."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..engine import distributed
from ..engine.device import pick_device
from ..engine.perf import pick_num_threads, set_threads
from ..errors import UsageError


def prepare_device(
    spec: str | None, resume_state: dict[str, Any] | None, pick_threads: bool = True
) -> torch.device:
    """The run's device, with torch's intra-op threads set for it.

    Args:
        spec: the config's device (None picks CUDA / MPS / CPU).
        resume_state: the verified ``last.ckpt`` of a resumed run; its thread count is put back,
            since a run resumes bit-identical only with its own count.
        pick_threads: on the CPU, take the cores other processes leave free (an explicit
            ``OMP_NUM_THREADS`` is the user's choice and wins). Workers of a data-parallel run
            on one machine share those cores (``free // workers``, at least one each).

    Raises:
        UsageError: a resumed run trained by another number of processes.
    """
    device = pick_device(spec)
    world = distributed.init_from_env(device)
    if resume_state is not None:
        saved = int(resume_state.get("world_size", 1))
        if saved != world.size:
            raise UsageError(
                f"this run was trained by {saved} process(es) and its checkpoint holds one random "
                f"state per process; resume it with --nproc {saved} (not {world.size})"
            )
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        if world.active:
            set_threads(max(1, pick_num_threads() // world.local_size))
        elif pick_threads:
            # On a shared machine, threads that wait for busy cores stall every op (docs/performance.md).
            set_threads(pick_num_threads())
    if resume_state is not None and "num_threads" in resume_state:
        set_threads(int(resume_state["num_threads"]))
    return device


__all__ = ["prepare_device"]
