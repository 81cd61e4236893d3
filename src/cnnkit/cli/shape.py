"""`cnnkit shape 28x28x1 conv:32:3:same pool:2 ...`: output sizes through a stack of layers.

Layers: ``conv:FILTERS:KERNEL[:STRIDE][:PADDING]``, ``pool:SIZE[:STRIDE][:PADDING]``,
``depthpool:SIZE``, ``gap`` (global average pooling), ``flatten`` and ``dense:UNITS``.
PADDING is ``valid`` (default), ``same`` or a number of zeros per side; it may follow the
kernel size directly (``conv:32:3:same`` is stride 1, 'same').
The input is HxWxC (28x28x1), HxW (one channel) or CxHxW (1x28x28, noted when so read);
output shapes are printed (C, H, W), as in `cnnkit summary` and `cnnkit viz diagram`.
"""

from __future__ import annotations

import argparse

from ..errors import UsageError

HELP = "output-size calculator for a stack of layers"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="input as HxWxC, e.g. 39x31x1 (or HxW, or CxHxW)")
    p.add_argument("layers", nargs="+", help="layers, e.g. conv:20:4 pool:2 conv:40:3 dense:100")


def _ints(parts: list[str], spec: str, count: int) -> list[int]:
    try:
        values = [int(v) for v in parts[:count]]
    except ValueError:
        raise UsageError(f"layer {spec!r}: expected integers, see `cnnkit shape --help`") from None
    if any(v < 1 for v in values):
        raise UsageError(f"layer {spec!r}: sizes, filters and strides must be >= 1")
    return values


def _stride_padding(parts: list[str], spec: str, default_stride: int) -> tuple[int, str | int]:
    """(stride, padding) from what follows the kernel: ``[STRIDE][:PADDING]``, either may be left out."""
    stride = default_stride
    if parts and parts[0].isdigit():
        stride = _ints(parts, spec, 1)[0]
        parts = parts[1:]
    if len(parts) > 1:
        raise UsageError(f"layer {spec!r}: too many fields, see `cnnkit shape --help`")
    pad = parts[0] if parts else "valid"
    return stride, int(pad) if pad.isdigit() else pad


def walk(input_shape: tuple[int, int, int], specs: list[str]) -> list[tuple[str, tuple[int, ...], int]]:
    """(layer, output shape as (C, H, W) or (units,), parameters) for each layer spec."""
    from ..layers import conv_output_size

    c, h, w = input_shape
    rows: list[tuple[str, tuple[int, ...], int]] = []
    flat: int | None = None
    for spec in specs:
        kind, *parts = spec.lower().split(":")
        try:
            if kind == "conv" and len(parts) >= 2:
                filters, k = _ints(parts, spec, 2)
                stride, pad = _stride_padding(parts[2:], spec, 1)
                h, w = conv_output_size(h, k, stride, pad), conv_output_size(w, k, stride, pad)
                rows.append((spec, (filters, h, w), k * k * c * filters + filters))
                c = filters
            elif kind == "pool" and parts:
                size = _ints(parts, spec, 1)[0]
                stride, pad = _stride_padding(parts[1:], spec, size)
                h, w = conv_output_size(h, size, stride, pad), conv_output_size(w, size, stride, pad)
                rows.append((spec, (c, h, w), 0))
            elif kind == "depthpool" and parts:
                size = _ints(parts, spec, 1)[0]
                if c % size:
                    raise UsageError(f"layer {spec!r}: {c} channels are not divisible by {size}")
                c //= size
                rows.append((spec, (c, h, w), 0))
            elif kind == "gap":
                flat = c
                rows.append((spec, (c,), 0))
            elif kind == "flatten":
                flat = h * w * c
                rows.append((spec, (flat,), 0))
            elif kind == "dense" and parts:
                units = _ints(parts, spec, 1)[0]
                inputs = flat if flat is not None else h * w * c
                rows.append((spec, (units,), inputs * units + units))
                flat = units
            else:
                raise UsageError(
                    f"unknown layer {spec!r}; use conv:F:K[:S][:P], pool:K[:S][:P], depthpool:K, "
                    "gap, flatten or dense:U"
                )
        except ValueError as exc:
            if isinstance(exc, UsageError):
                raise
            raise UsageError(f"layer {spec!r}: {exc}") from None
    return rows


def run(args: argparse.Namespace) -> int:
    import sys

    from ..input_shape import SHAPES_NOTE, read_input_shape

    (c, h, w), note = read_input_shape(args.input)
    if note:
        print(f"cnnkit: {note}", file=sys.stderr)
    rows = walk((c, h, w), args.layers)
    print(f"input {h}x{w}x{c} (HxWxC)   {SHAPES_NOTE}")
    print(f"{'layer':<24} {'output':<16} {'params':>12}")
    print(f"{'input':<24} {str((c, h, w)):<16} {0:>12,}")
    for spec, shape, params in rows:
        print(f"{spec:<24} {str(shape):<16} {params:>12,}")
    print(f"total parameters: {sum(r[2] for r in rows):,}")
    return 0
