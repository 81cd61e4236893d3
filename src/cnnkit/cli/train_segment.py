"""`cnnkit train segment`: the segmentation options (interim: the task module's own parser)."""

from __future__ import annotations

import argparse
from typing import Any


def _legacy_scene_arguments(p: argparse.ArgumentParser) -> None:
    # The scene options the segmentation task's own parser reads (they were tasks/detection/cli.py's).
    p.add_argument("--canvas", type=int, metavar="PX", help="FashionScenes / training image side")
    p.add_argument("--train-images", type=int, metavar="N", help="FashionScenes to generate for training")
    p.add_argument("--item-sizes", metavar="MIN,MAX", default="24,48", help="side range of the items")
    p.add_argument("--clutter", type=int, default=0, metavar="N", help="unlabelled item fragments per scene")
    p.add_argument("--noise", type=float, default=0.0, metavar="STD", help="Gaussian noise, grey levels")
    p.add_argument("--head-width", type=int, default=128, metavar="C", help=argparse.SUPPRESS)
    p.add_argument("--backbone-weights", metavar="RUN", help="start the backbone from this run or file")


def add_arguments(p: argparse.ArgumentParser, task: str) -> None:
    from ..tasks.segmentation import cli as segment_cli

    _legacy_scene_arguments(p)
    segment_cli.add_arguments(p)
    p.add_argument("--preset", default=None, help=argparse.SUPPRESS)


def legacy_main(args: argparse.Namespace) -> int:
    from ..tasks.segmentation import cli as segment_cli

    return int(segment_cli.train_main(args) or 0)


def config_from_args(args: argparse.Namespace, task: str) -> Any:
    raise AssertionError("interim module: legacy_main trains")


def summary(metrics: dict[str, Any], config: Any, out: Any) -> list[str]:
    return []
