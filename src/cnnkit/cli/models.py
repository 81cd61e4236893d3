"""`cnnkit models`: every registered model with its parameter count and input size."""

from __future__ import annotations

import argparse

HELP = "list the registered models"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", help="shell wildcard, e.g. 'resnet*'")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..models import create_model, list_models, model_entry

    names = list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}")
        return 2
    rows = [("name", "params", "input (HxWxC)", "small_input", "description")]
    for name in names:
        entry = model_entry(name)
        with torch.device("meta"):  # count parameters without allocating them
            model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        c, h, w = entry.input_size
        rows.append(
            (name, f"{params:,}", f"{h}x{w}x{c}", "yes" if entry.small_input else "", entry.description)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print(
            "  ".join(
                [
                    r[0].ljust(widths[0]),
                    r[1].rjust(widths[1]),
                    r[2].ljust(widths[2]),
                    r[3].ljust(widths[3]),
                    r[4],
                ]
            )
        )
    return 0
