"""`cnnkit train segment`: the segmentation options (interim: the task module's own parser)."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser, task: str) -> None:
    from ..tasks.detection import cli as detect_cli
    from ..tasks.segmentation import cli as segment_cli

    detect_cli.add_scene_arguments(p)
    segment_cli.add_arguments(p)
    p.add_argument("--preset", default=None, help=argparse.SUPPRESS)


def legacy_main(args: argparse.Namespace) -> int:
    from ..tasks.segmentation import cli as segment_cli

    return int(segment_cli.train_main(args) or 0)


def config_from_args(args: argparse.Namespace, task: str) -> Any:
    raise AssertionError("interim module: legacy_main trains")


def summary(metrics: dict[str, Any], config: Any, out: Any) -> list[str]:
    return []
