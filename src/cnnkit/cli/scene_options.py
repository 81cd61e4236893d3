"""Options of the generated FashionScenes, shared by `cnnkit train localize|detect|segment`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from ..errors import UsageError

# The options that shape generated FashionScenes only (SceneConfig.generated()): with data
# files they would be silently ignored, so they are refused (refuse_generated_only).
GENERATED_ONLY = {
    "train_images": "--train-images",
    "item_sizes": "--item-sizes",
    "clutter": "--clutter",
    "noise": "--noise",
    "min_objects": "--min-objects",
    "max_objects": "--max-objects",
}


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


def refuse_generated_only(
    args: argparse.Namespace, data: str, options: Mapping[str, str] = GENERATED_ONLY
) -> None:
    """Refuse, in one line naming them all, the ``options`` (argparse dest -> flag) given on the
    command line when ``data`` is not generated FashionScenes.

    Raises:
        UsageError: at least one of them was given.
    """
    given = [flag for key, flag in options.items() if getattr(args, key, None) is not None]
    if given:
        one = len(given) == 1
        raise UsageError(
            f"{', '.join(given)} {'is' if one else 'are'} for generated FashionScenes, "
            f"not --data {data}; leave {'it' if one else 'them'} out"
        )
