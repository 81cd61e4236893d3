"""Decoding an image folder's files in parallel, and the memory its uint8 cache takes.

An image folder is decoded once, through :mod:`cnnkit.data.image_io` (the one safe decoder),
into one uint8 tensor [N, C, H, W] at the training size; every epoch then indexes that tensor.
This module holds the two things that make that cheap and safe on a small machine:

- :func:`parallel_map`: the files decoded by worker processes (one per free core). Threads
  do not help here: the safe decoder's checks and conversions hold the GIL (measured with
  ``python bench/run.py --cases imagefolder``, decode rows).
- :func:`check_cache_fits`: the cache's size (N × C × H × W bytes) against a share of the
  memory the system has available, checked before anything is decoded.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..errors import DataError

__all__ = [
    "CACHE_MEMORY_FRACTION",
    "PARALLEL_MIN_FILES",
    "available_memory",
    "cache_bytes",
    "check_cache_fits",
    "decode_workers",
    "parallel_map",
]

T = TypeVar("T")
R = TypeVar("R")

# Fewer files decode faster in this process than a pool starts (~0.1 s per worker).
PARALLEL_MIN_FILES = 512
# The decoded cache may take this share of the memory available when loading starts: splitting
# it into train / validation / test copies it once, and the rest stays for the model, its
# activations and the other processes.
CACHE_MEMORY_FRACTION = 0.4
MEMINFO = "/proc/meminfo"


def decode_workers() -> int:
    """Processes to decode with: the cores this process may run on (its affinity mask), less
    those the 1-minute load average says other processes keep busy, at least one. On a busy
    machine extra processes only queue for the same cores (a 600-file folder decoded at 144
    files/s with two workers and 248 with one, at load 16 on 2 cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def parallel_map(
    items: Sequence[T], fn: Callable[[T], R], workers: int | None = None, min_items: int = PARALLEL_MIN_FILES
) -> Iterator[R]:
    """``fn`` of every item, in order, computed by ``workers`` forked processes (yielded as they
    arrive, so that the caller stores each result before the next one comes).

    Falls back to this process (``map``) for fewer than ``min_items`` items, one worker, or a
    platform other than Linux. With workers, ``fn`` is pickled: a module-level function or a
    picklable callable object.

    Args:
        items: the inputs (paths, (path, label) pairs...).
        fn: a picklable function of one item.
        workers: processes (default: :func:`decode_workers`).
        min_items: below this many items, no pool.
    """
    workers = decode_workers() if workers is None else workers
    # fork only on Linux: macOS's system libraries are not fork-safe (Python's default there is
    # spawn, which would re-import the caller); elsewhere this process decodes alone.
    if workers < 2 or len(items) < min_items or not sys.platform.startswith("linux"):
        yield from map(fn, items)
        return
    chunk = max(1, min(64, len(items) // (4 * workers)))
    # fork: the workers start at once, without re-importing the caller's modules.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    try:
        yield from pool.map(fn, items, chunksize=chunk)
    finally:  # a caller that stops early (the first bad file) leaves no work behind
        pool.shutdown(wait=True, cancel_futures=True)


def cache_bytes(n: int, channels: int, height: int, width: int) -> int:
    """Bytes of a uint8 cache of ``n`` images [channels, height, width]."""
    return n * channels * height * width


def available_memory() -> int | None:
    """Bytes the system can give without swapping (Linux ``MemAvailable``; else free pages)."""
    try:
        with open(MEMINFO, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GB"  # unreachable


def check_cache_fits(
    root: str | os.PathLike[str],
    n: int,
    shape: tuple[int, int, int],
    fraction: float = CACHE_MEMORY_FRACTION,
    available: int | None = None,
) -> int:
    """The cache's size in bytes, after checking it against ``fraction`` of the free memory.

    Args:
        root: the folder (named in the error).
        n: images.
        shape: (channels, height, width) they are stored at.
        fraction: share of the available memory the cache may take.
        available: bytes available (default: :func:`available_memory`; unknown passes).

    Raises:
        DataError: the cache would not fit, with its size and the ways to shrink it.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    size = cache_bytes(n, *shape)
    free = available_memory() if available is None else available
    if free is not None and size > fraction * free:
        channels, height, width = shape
        raise DataError(
            f"{Path(root)}: {n:,} images at {height}x{width}x{channels} take {_human(size)} decoded, "
            f"more than {fraction:.0%} of the {_human(free)} of memory available; use a smaller "
            "--image-size, fewer images (--limit-train) or a machine with more memory"
        )
    return size
