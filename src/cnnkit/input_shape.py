"""Input shapes as users write them (``28x28x1``, ``28x28``, ``1x28x28``): no torch needed, so
`cnnkit shape` answers without importing it."""

from __future__ import annotations

import re

from .errors import UsageError

SHAPES_NOTE = "output shapes (C, H, W), as PyTorch tensors hold them"


def parse_input_shape(text: str | tuple[int, ...] | list[int]) -> tuple[int, int, int]:
    """Parse ``'28x28x1'`` (rows x cols x channels, as Keras writes it) into (C, H, W).

    ``'28x28'`` is one channel; ``'1x28x28'`` (PyTorch's C x H x W) is read as such when the first
    number is 1 or 3 and the last is not (``read_input_shape`` also says so). Tuples/lists are
    taken as (C, H, W) already.

    Raises:
        UsageError: for anything that is not two or three positive integers.
    """
    return read_input_shape(text)[0]


def read_input_shape(text: str | tuple[int, ...] | list[int]) -> tuple[tuple[int, int, int], str | None]:
    """``parse_input_shape`` and a one-line note when the text was read as C x H x W (else None)."""
    if isinstance(text, tuple | list):
        dims = tuple(int(v) for v in text)
        if len(dims) != 3 or min(dims) < 1:
            raise UsageError(f"input shape must be (C, H, W) with positive sizes, got {text!r}")
        return dims, None  # type: ignore[return-value]
    match = re.fullmatch(r"\s*(\d+)\s*[x×,]\s*(\d+)\s*(?:[x×,]\s*(\d+)\s*)?", str(text))
    if not match or min(int(g) for g in match.groups() if g is not None) < 1:
        raise UsageError(f"--input must look like HxWxC or HxW, e.g. 28x28x1 or 224x224x3; got {text!r}")
    a, b, c = (int(g) if g is not None else None for g in match.groups())
    if c is None:
        return (1, a, b), None
    if a in (1, 3) and c not in (1, 3):
        # 1x28x28 as HxWxC would be one row of 28 pixels with 28 channels: the C x H x W habit.
        return (a, b, c), f"read --input {text} as CxHxW (PyTorch's order), that is {b}x{c}x{a} (HxWxC)"
    return (c, a, b), None
