"""Per-device speed settings: threads, mixed precision, memory format, inference batch.

Every trick here was measured with ``python bench/run.py`` (see docs/performance.md) and is on
by default only where it helped on that kind of device.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class PerfSettings:
    """Speed settings for one device.

    Attributes:
        amp: None, 'bf16' or 'fp16' autocast for training and inference.
        channels_last: NHWC memory format (oneDNN and cuDNN convolutions prefer it).
        num_threads: CPU intra-op threads (None: leave torch's choice).
        inference_batch: images per forward pass in inference.
    """

    amp: str | None
    channels_last: bool
    num_threads: int | None
    inference_batch: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_has_bf16() -> bool:
    """Whether the CPU has native bf16 dot products (AVX512_BF16 or AMX-BF16)."""
    caps: dict[str, Any] = {}
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            caps = get()
        except (RuntimeError, AttributeError):
            caps = {}
    if caps:
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    try:  # older torch: read the kernel's flags
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _usable_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    return max(1, len(_usable_cpus()))


PROC_STAT = "/proc/stat"
BUSY_SAMPLE_S = 0.3


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]] | None:
    """(busy, total) clock ticks since boot for each CPU in ``cpus``, from /proc/stat."""
    try:
        with open(PROC_STAT, encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    times = {}
    for line in lines:
        name, *fields = line.split() or [""]
        if not (name.startswith("cpu") and name[3:].isdigit() and len(fields) >= 4):
            continue  # the all-CPU total, other counters
        if int(name[3:]) not in cpus:
            continue
        user, nice, system, idle, *rest = (int(v) for v in fields[:8])
        iowait, irq, softirq, steal = ([*rest, 0, 0, 0, 0])[:4]
        busy = user + nice + system + irq + softirq + steal  # steal: the host kept the core
        times[int(name[3:])] = (busy, busy + idle + iowait)
    return times or None


def busy_cores(seconds: float = BUSY_SAMPLE_S) -> float | None:
    """How many of this process's usable cores are busy right now (Linux; None elsewhere).

    Two reads of /proc/stat ``seconds`` apart, summed over the CPUs in the affinity mask. The
    caller sleeps in between, so the figure is other processes' work (and the host's steal).
    Unlike the 1-minute load average, it does not still count a job that ended a moment ago.
    """
    cpus = _usable_cpus()
    first = _cpu_times(cpus)
    if first is None:
        return None
    time.sleep(seconds)
    second = _cpu_times(cpus)
    if second is None:
        return None
    return busy_between(first, second)


def busy_between(first: dict[int, tuple[int, int]], second: dict[int, tuple[int, int]]) -> float:
    """Busy cores between two /proc/stat readings: each CPU's busy share of its ticks, summed."""
    busy = 0.0
    for cpu, (b1, t1) in second.items():
        b0, t0 = first.get(cpu, (b1, t1))
        if t1 > t0:
            busy += min(1.0, max(0.0, (b1 - b0) / (t1 - t0)))
    return busy


def pick_num_threads(load: float | None = None) -> int:
    """Intra-op threads for CPU work: the cores that other processes leave free, at least one.

    On a shared machine, an OpenMP thread that waits for a core the others hold stalls every
    parallel region: on 2 cores under load 4+, 2 threads ran 5-40x slower than 1 (see
    docs/performance.md). ``load`` is the number of cores *other* processes keep busy; by
    default it is measured now (``busy_cores``, a 0.3 s sample), else where that cannot be
    read the 1-minute load average, which lags: it still counts a job that ended a minute ago.
    """
    cores = usable_cores()
    if load is None:
        load = busy_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return cores
    return max(1, min(cores, int(cores - load + 0.5)))


def set_threads(num_threads: int | None) -> None:
    """Set torch's intra-op threads (None leaves them); inter-op stays as torch set it."""
    if num_threads is None:
        return
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be an int >= 1 or None, got {num_threads!r}")
    torch.set_num_threads(num_threads)


_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_allocator_tuned: bool | None = None


def tune_cpu_allocator(device: torch.device | None = None) -> bool:
    """Let glibc's malloc keep freed tensor memory in the process, for the next batch to reuse.

    By default glibc gives every block over 128 KiB its own ``mmap`` and returns it to the
    kernel on free, so each training step faults in and zeroes its activations' pages again:
    a 256-image batch of the course CNN allocates ~13 MB tensors dozens of times a step. With
    blocks up to 32 MiB (glibc's upper limit on 64-bit) served from the heap, and up to
    128 MiB of free heap kept, the fast path trains about 1.5× faster on the benchmark machine
    (docs/performance.md). Process-wide and harmless to results (only where memory comes from);
    set ``CNNKIT_TUNE_MALLOC=0`` to leave malloc as it is. Does nothing outside glibc.

    Args:
        device: where the work runs; anything but a CPU leaves malloc alone (its tensors are
            not in host memory).

    Returns:
        True if the settings are in effect (now or from an earlier call).
    """
    global _allocator_tuned
    if device is not None and device.type != "cpu":
        return False
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if os.environ.get("CNNKIT_TUNE_MALLOC", "1") == "0" or platform.system() != "Linux":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mmap_max = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)
    # mmap threshold first: setting either one turns off glibc's own adjustment of both.
    _allocator_tuned = bool(mallopt(_M_MMAP_THRESHOLD, mmap_max)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 4 * mmap_max)
    )
    return _allocator_tuned


def pick_perf_settings(device: torch.device, num_threads: int | None = None) -> PerfSettings:
    """The measured-best defaults for ``device``.

    - CPU: channels-last (oneDNN's NHWC kernels), bf16 autocast only on CPUs with native bf16
      dot products (without them bf16 is emulated and slower), threads from
      ``pick_num_threads``, inference batches of 256 (faster than 1000: they stay in cache).
    - CUDA: bf16 autocast where supported (FP32 elsewhere: the Trainer has no fp16 loss
      scaler), channels-last for tensor-core convolutions.
    - MPS and others: FP32, NCHW.

    Args:
        device: where the model runs.
        num_threads: CPU threads; None picks them.
    """
    if device.type == "cpu":
        return PerfSettings(
            amp="bf16" if cpu_has_bf16() else None,
            channels_last=True,
            num_threads=num_threads or pick_num_threads(),
            inference_batch=256,
        )
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return PerfSettings(
            amp="bf16" if bf16 else None, channels_last=True, num_threads=None, inference_batch=1024
        )
    return PerfSettings(amp=None, channels_last=False, num_threads=None, inference_batch=256)


def train_autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    """Autocast for training forward passes: bf16 if ``amp == 'bf16'``, else a no-op.

    Losses are computed from the outputs cast back to float32; evaluation stays in float32.
    """
    if amp not in (None, "bf16"):
        raise ValueError(f"amp must be None or 'bf16', got {amp!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")
