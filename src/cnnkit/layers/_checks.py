"""Argument checks shared by the layers and the padding arithmetic (no torch: `cnnkit shape`)."""

from __future__ import annotations


def check_positive_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (a bool is refused); else ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value
