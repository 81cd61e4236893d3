"""`cnnkit summary RUN_OR_MODEL --input HxWxC`: layers, shapes, parameters, MACs and memory."""

from __future__ import annotations

import argparse
import inspect
import json
import sys

from .targets import add_target

HELP = "per-layer table with shapes, parameters, MACs and memory"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target(p, "model")
    p.add_argument(
        "--input", help="input as HxWxC (28x28x1), HxW (one channel) or CxHxW (default: the model's own)"
    )
    p.add_argument("--batch", type=int, default=1, help="batch size for the training-memory estimate")
    p.add_argument("--optimizer", default="adam", help="optimizer for the training-memory estimate")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default: the model's own)")
    p.add_argument("--small-input", action="store_true", help="the model's small-input variant")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")


def resolve_model(spec: str, num_classes: int | None = None, small_input: bool = False, input_shape=None):
    """A model (and its default (C, H, W)) from a registry name, a run folder or the shipped run."""
    import math
    from pathlib import Path

    import torch

    from ..errors import UsageError
    from ..inspect import read_input_shape
    from ..inspect.summary import META_ABOVE_ELEMENTS, check_input_size
    from ..models import create_model, model_entry
    from ..runs.folder import SHIPPED

    if Path(spec).is_dir() or spec == SHIPPED:  # a run, or the run that ships with cnnkit
        from ..runs.folder import load_run

        model, record = load_run(spec, device="cpu")
        return model, tuple(record["input_shape"]), record["run"]["model"]
    entry = model_entry(spec)
    shape, note = read_input_shape(input_shape) if input_shape else (entry.input_size, None)
    if note:
        print(f"cnnkit: {note}", file=sys.stderr)
    check_input_size(shape)
    kwargs = {}
    if small_input:
        if not entry.small_input:
            raise UsageError(f"{spec} has no small-input variant")
        kwargs["small_input"] = True
    if shape[0] != entry.input_size[0]:
        kwargs["in_chans"] = shape[0]
    takes_size = "input_size" in inspect.signature(entry.builder).parameters
    if input_shape and takes_size and shape[1] == shape[2]:
        kwargs["input_size"] = shape[1]
    if math.prod(shape) > META_ABOVE_ELEMENTS:
        # Built without memory: a model sized for a huge input may need more than the machine
        # has; the summary then says how much instead of failing to allocate it.
        with torch.device("meta"):
            return create_model(spec, num_classes=num_classes, **kwargs), shape, spec
    return create_model(spec, num_classes=num_classes, **kwargs), shape, spec


def run(args: argparse.Namespace) -> int:
    from ..inspect import summary

    model, shape, name = resolve_model(args.model, args.num_classes, args.small_input, args.input)
    s = summary(model, shape, batch_size=args.batch, optimizer=args.optimizer, name=name)
    print(json.dumps(s.to_dict(), indent=2) if args.json else s)
    return 0
