"""The compiler's persistent cache, the compile seconds measured before, and whether compiling pays.

inductor keeps the kernels it builds (and the graphs it can pickle) in ``TORCHINDUCTOR_CACHE_DIR``;
cnnkit points it at ``${XDG_CACHE_HOME:-~/.cache}/cnnkit/inductor`` unless the user set it, so
that a later process compiling the same model reuses them. Next to it, ``compile_seconds.json``
keeps the fewest compile seconds measured per model and input, the expected cost of compiling
it again.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from torch import nn

# Frozen compiled inference of the course CNN saved 15-26 % of eager bf16's time per image in
# the benchmark runs (docs/performance.md); the lower end is the expected saving.
COMPILED_SAVING = 0.15
# Expected seconds of a first compile with nothing measured yet for the model (an empty cache).
COLD_COMPILE_SECONDS = 10.0
INDUCTOR_ENV = "TORCHINDUCTOR_CACHE_DIR"
_SECONDS_FILE = "compile_seconds.json"
_set_by_cnnkit: list[str] = []


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/cnnkit``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnnkit"


def use_persistent_cache() -> str | None:
    """Points inductor at cnnkit's cache folder unless ``TORCHINDUCTOR_CACHE_DIR`` is set (by the
    user, or by inductor itself earlier in the process); returns the folder cnnkit set, if any."""
    if INDUCTOR_ENV not in os.environ:
        folder = cache_root() / "inductor"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only home: inductor's own default stays
            return None
        os.environ[INDUCTOR_ENV] = str(folder)
        _set_by_cnnkit[:] = [str(folder)]
    return _set_by_cnnkit[0] if _set_by_cnnkit else None


def compile_key(model: nn.Module, x: torch.Tensor) -> str:
    """What a compiled inference graph depends on: the model's class and size, the input's shape,
    dtype and memory format, the autocast dtype, the device and the PyTorch version."""
    size = sum(t.numel() for t in model.parameters())
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    amp = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
    parts = (type(model).__name__, size, tuple(x.shape), x.dtype, cl, amp, x.device.type, torch.__version__)
    return "|".join(str(v) for v in parts)


def _seconds_path() -> Path:
    return cache_root() / _SECONDS_FILE


def expected_compile_seconds(key: str) -> float:
    """The fewest compile seconds measured for ``key`` (warm cache), else ``COLD_COMPILE_SECONDS``."""
    try:
        return float(json.loads(_seconds_path().read_text(encoding="utf-8"))[key])
    except (OSError, ValueError, KeyError, TypeError):
        return COLD_COMPILE_SECONDS


def record_compile_seconds(key: str, seconds: float) -> None:
    """Keeps the fewest seconds measured for ``key`` as the expected cost of compiling it again
    (the cache is warm after the first compile; a busy machine's slow compile is not kept, since
    the eager time it is weighed against was measured at that moment). Best effort."""
    path = _seconds_path()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    with contextlib.suppress(TypeError, ValueError):
        seconds = min(seconds, float(known.get(key, seconds)))
    known[key] = round(seconds, 3)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def compile_pays(
    images: int, eager_seconds_per_image: float, compile_seconds: float, saving: float = COMPILED_SAVING
) -> bool:
    """Whether compiling wins back its time: ``images`` × the per-image saving (``saving`` of
    the eager time) exceeds the expected ``compile_seconds``."""
    return images * eager_seconds_per_image * saving > compile_seconds
