"""Named training recipes. ``course`` is the book's; ``fast`` is tuned for speed on a CPU."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError

PRESETS: dict[str, dict[str, Any]] = {
    "course": {},
    "fast": {"batch_size": 128, "lr": 3e-3, "label_smoothing": 0.1, "patience": 3},
}


def apply_preset(name: str, config: dict[str, Any], explicit: set[str] = frozenset()) -> dict[str, Any]:
    """Fill ``config`` with the preset's values, leaving keys the user set explicitly."""
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    out = dict(config)
    for key, value in PRESETS[name].items():
        if key not in explicit:
            out[key] = value
    out["preset"] = name
    return out
