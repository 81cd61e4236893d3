"""What every run does before it builds its model: pick the device, join the process group of a
data-parallel run, and set the CPU threads."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..engine import distributed
from ..engine.device import pick_device
from ..engine.perf import pick_num_threads, set_threads
from ..engine.threads import ThreadController, adaptive_enabled, core_limit
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


def explicit_threads() -> bool:
    """Whether the user fixed the thread count (``OMP_NUM_THREADS``, ``--threads``); a count the
    data-parallel launcher chose (``CNNKIT_AUTO_THREADS=1``) is not fixed."""
    return "OMP_NUM_THREADS" in os.environ and os.environ.get("CNNKIT_AUTO_THREADS") != "1"


def thread_controller(
    device: torch.device, pick_threads: bool = True, deterministic: bool = False, ceiling: int | None = None
) -> ThreadController | None:
    """The run's adaptive threads (``engine.threads``), or None where the count stays fixed.

    Fixed: off the CPU, a count the user gave (``--threads``, ``OMP_NUM_THREADS``),
    ``deterministic`` runs and ``CNNKIT_ADAPTIVE_THREADS=0``. Otherwise the controller may use
    up to: a data-parallel worker's share of the cores (``cores // local workers``); all usable
    cores where the run picks its threads (``pick_threads``); else ``ceiling`` or the count set
    now (torch's own, all cores by default), which it may lower under load and restore.
    """
    if device.type != "cpu" or deterministic or explicit_threads() or not adaptive_enabled():
        return None
    world = distributed.current()
    if world.active:
        cap = max(1, core_limit() // world.local_size)
    elif pick_threads:
        cap = core_limit()
    else:
        cap = ceiling or torch.get_num_threads()
    return ThreadController(cap)


__all__ = ["explicit_threads", "prepare_device", "thread_controller"]
