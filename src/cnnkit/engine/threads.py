"""Adaptive CPU threads: follow the cores other processes leave free while a run goes on.

``perf.pick_num_threads`` chooses the intra-op threads once, before a run. A ``ThreadController``
keeps choosing: between training steps and inference batches it looks, at most every
``every_s`` seconds, at how busy the run's cores were since its last look and calls
``torch.set_num_threads`` when the free cores change. A look costs one read of /proc/stat and
the process's CPU clock (tens of microseconds; no sleep): the cores busy over the interval,
minus what this process itself used, are the other processes' work. On a shared machine an
OpenMP thread that waits for a busy core stalls every parallel region (docs/performance.md),
so fewer threads are taken as soon as others come, and more again once they have stayed away
for ``raise_after`` looks in a row.

Thread counts change only how CPU sums are split: results differ by float reordering (tested),
not bit for bit. Runs that must repeat bit for bit fix the count (``--threads N``,
``OMP_NUM_THREADS``, ``--deterministic``) or set ``CNNKIT_ADAPTIVE_THREADS=0``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from . import perf

CHECK_EVERY_S = 0.5  # between looks while steps or batches run
MIN_WINDOW_S = 0.25  # a shorter interval's tick counts (100 per second) are too coarse
RAISE_AFTER = 2  # looks in a row that must find more free cores before threads are added
MAX_CHANGES_KEPT = 200
CGROUP_V2 = "/sys/fs/cgroup/cpu.max"
CGROUP_V1 = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cpu_quota() -> float | None:
    """The cgroup's CPU limit in cores (``cpu.max`` quota / period), None when unlimited or unknown."""
    try:
        with open(CGROUP_V2, encoding="ascii") as f:
            quota, _, period = f.read().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or 100_000)
    except (OSError, ValueError):
        pass
    try:
        with open(CGROUP_V1[0], encoding="ascii") as f:
            quota_us = int(f.read())
        with open(CGROUP_V1[1], encoding="ascii") as f:
            period_us = int(f.read())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def core_limit() -> int:
    """Cores this process may use: its affinity mask, lowered to a cgroup CPU quota (rounded up)."""
    cores = perf.usable_cores()
    quota = cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def adaptive_enabled() -> bool:
    """False when ``CNNKIT_ADAPTIVE_THREADS=0`` is in the environment."""
    return os.environ.get("CNNKIT_ADAPTIVE_THREADS", "1") != "0"


class ThreadController:
    """Sets torch's intra-op threads to the cores other processes leave free, at most ``cap``.

    Args:
        cap: the most threads to use (a data-parallel worker's share); None: all usable cores.
            The affinity mask and a cgroup quota always bound it too.
        every_s: seconds between looks in ``poll``.
        raise_after: looks in a row that must find more free cores before threads are added
            (fewer are taken at the first look that finds the cores busy).
        clock, own_cpu: wall clock and this process's CPU seconds (all its threads).

    ``changes`` lists every change made: seconds since the controller started, the count
    before and after, and the busy cores of other processes it saw.
    """

    def __init__(
        self,
        cap: int | None = None,
        *,
        every_s: float = CHECK_EVERY_S,
        raise_after: int = RAISE_AFTER,
        clock: Callable[[], float] = time.monotonic,
        own_cpu: Callable[[], float] = time.process_time,
    ) -> None:
        if cap is not None and cap < 1:
            raise ValueError(f"cap must be >= 1 or None, got {cap!r}")
        self.cap = cap
        self.every_s = every_s
        self.raise_after = max(1, raise_after)
        self.clock = clock
        self.own_cpu = own_cpu
        self.changes: list[dict[str, Any]] = []
        self.others: float | None = None  # other processes' busy cores at the last look
        self._started = clock()
        self._last: tuple[float, float, dict[int, tuple[int, int]]] | None = None
        self._higher = 0  # looks in a row that wanted more threads

    def limit(self) -> int:
        """The most threads allowed now: ``cap``, the affinity mask and the cgroup quota."""
        cores = core_limit()
        return cores if self.cap is None else max(1, min(self.cap, cores))

    def _sample(self) -> tuple[float, float, dict[int, tuple[int, int]]] | None:
        times = perf._cpu_times(perf._usable_cpus())
        return None if times is None else (self.clock(), self.own_cpu(), times)

    def poll(self) -> int | None:
        """``check`` if ``every_s`` seconds passed since the last look (a clock read otherwise)."""
        if self._last is not None and self.clock() - self._last[0] < self.every_s:
            return None
        return self.check()

    def check(self) -> int | None:
        """Look now (if at least MIN_WINDOW_S passed since the last look) and set the threads.

        Returns:
            The new thread count when it changed, else None.
        """
        last = self._last
        if last is not None and self.clock() - last[0] < MIN_WINDOW_S:
            return None
        now = self._sample()
        if now is None:  # no /proc/stat: keep the count chosen at the start
            return None
        self._last = now
        if last is None:
            return None
        own = max(0.0, (now[1] - last[1]) / (now[0] - last[0]))
        self.others = max(0.0, perf.busy_between(last[2], now[2]) - own)
        return self.decide(self.others)

    def decide(self, others: float) -> int | None:
        """Set the threads for ``others`` busy cores of other processes; the new count if changed."""
        limit = self.limit()
        cores = perf.usable_cores()
        target = max(1, min(limit, int(cores - others + 0.5)))
        current = torch.get_num_threads()
        if target > current:
            self._higher += 1
            if self._higher < self.raise_after:
                return None
        self._higher = 0
        if target == current:
            return None
        torch.set_num_threads(target)
        if len(self.changes) < MAX_CHANGES_KEPT:
            at = round(self.clock() - self._started, 2)
            self.changes.append({"at_s": at, "from": current, "to": target, "others": round(others, 2)})
        return target

    def summary(self) -> dict[str, Any]:
        """What the run's metrics record: the cap, the changes and the count at the end."""
        return {
            "adaptive": True,
            "cap": self.limit(),
            "final": torch.get_num_threads(),
            "changes": self.changes,
        }


__all__ = ["ThreadController", "adaptive_enabled", "core_limit", "cpu_quota"]
