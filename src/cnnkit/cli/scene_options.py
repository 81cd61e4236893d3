"""Options of the generated FashionScenes, shared by `cnnkit train localize|detect|segment`."""

from __future__ import annotations

import argparse


def int_pair(text: str) -> list[int]:
    """``MIN,MAX`` as two integers."""
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes MIN,MAX (two integers), got {text!r}") from None
    return [low, high]


def add_scene_arguments(p: argparse.ArgumentParser, task: str) -> None:
    """The FashionScenes options (all default to None: the task's own defaults apply)."""
    p.add_argument("--canvas", type=int, metavar="PX", help="FashionScenes / training image side")
    p.add_argument("--train-images", type=int, metavar="N", help="FashionScenes to generate for training")
    p.add_argument(
        "--item-sizes",
        type=int_pair,
        metavar="MIN,MAX",
        help="FashionScenes only: side range of the scaled 28x28 items, pixels (default 24,48)",
    )
    p.add_argument("--clutter", type=int, metavar="N", help="unlabelled item fragments per scene (default 0)")
    p.add_argument("--noise", type=float, metavar="STD", help="Gaussian noise, grey levels (default 0)")
    if task != "localize":  # one item per scene there
        p.add_argument("--min-objects", type=int, metavar="N", help="fewest items per scene")
        p.add_argument("--max-objects", type=int, metavar="N", help="most items per scene")
