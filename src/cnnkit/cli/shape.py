"""`cnnkit shape 28x28x1 conv:32:3:same pool:2 ...`: output sizes through a stack of layers.

Layers: ``conv:FILTERS:KERNEL[:STRIDE][:PADDING]``, ``pool:SIZE[:STRIDE][:PADDING]``,
``depthpool:SIZE``, ``gap`` (global average pooling), ``flatten`` and ``dense:UNITS``.
PADDING is ``valid`` (default), ``same`` or a number of zeros per side.
"""

from __future__ import annotations

import argparse

from ..errors import UsageError

HELP = "output-size calculator for a stack of layers"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="input as HxWxC, e.g. 39x31x1")
    p.add_argument("layers", nargs="+", help="layers, e.g. conv:20:4 pool:2 conv:40:3 dense:100")


def _ints(parts: list[str], spec: str, count: int) -> list[int]:
    try:
        values = [int(v) for v in parts[:count]]
    except ValueError:
        raise UsageError(f"layer {spec!r}: expected integers, see `cnnkit shape --help`") from None
    if any(v < 1 for v in values):
        raise UsageError(f"layer {spec!r}: sizes, filters and strides must be >= 1")
    return values


def walk(input_shape: tuple[int, int, int], specs: list[str]) -> list[tuple[str, tuple[int, ...], int]]:
    """(layer, output shape as H,W,C or (units,), parameters) for each layer spec."""
    from ..layers import conv_output_size

    c, h, w = input_shape
    rows: list[tuple[str, tuple[int, ...], int]] = []
    flat: int | None = None
    for spec in specs:
        kind, *parts = spec.lower().split(":")
        try:
            if kind == "conv" and len(parts) >= 2:
                filters, k = _ints(parts, spec, 2)
                stride = _ints(parts[2:], spec, 1)[0] if len(parts) > 2 else 1
                pad: str | int = parts[3] if len(parts) > 3 else "valid"
                pad = int(pad) if str(pad).isdigit() else pad
                h, w = conv_output_size(h, k, stride, pad), conv_output_size(w, k, stride, pad)
                rows.append((spec, (h, w, filters), k * k * c * filters + filters))
                c = filters
            elif kind == "pool" and parts:
                size = _ints(parts, spec, 1)[0]
                stride = _ints(parts[1:], spec, 1)[0] if len(parts) > 1 else size
                pad = parts[2] if len(parts) > 2 else "valid"
                h, w = conv_output_size(h, size, stride, pad), conv_output_size(w, size, stride, pad)
                rows.append((spec, (h, w, c), 0))
            elif kind == "depthpool" and parts:
                size = _ints(parts, spec, 1)[0]
                if c % size:
                    raise UsageError(f"layer {spec!r}: {c} channels are not divisible by {size}")
                c //= size
                rows.append((spec, (h, w, c), 0))
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
    from ..inspect import parse_input_shape

    c, h, w = parse_input_shape(args.input)
    rows = walk((c, h, w), args.layers)
    print(f"{'layer':<24} {'output':<16} {'params':>12}")
    print(f"{'input':<24} {str((h, w, c)):<16} {0:>12,}")
    for spec, shape, params in rows:
        print(f"{spec:<24} {str(shape):<16} {params:>12,}")
    print(f"total parameters: {sum(r[2] for r in rows):,}")
    return 0
