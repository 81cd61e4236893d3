"""`cnnkit train localize|detect`: the scene options (interim: the task modules' own parsers)."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser, task: str) -> None:
    from ..tasks.detection import cli as detect_cli
    from ..tasks.localization import cli as localize_cli

    (localize_cli if task == "localize" else detect_cli).add_arguments(p)
    p.add_argument("--preset", default=None, help=argparse.SUPPRESS)


def legacy_main(args: argparse.Namespace) -> int:
    from ..tasks.detection import cli as detect_cli
    from ..tasks.localization import cli as localize_cli

    return int((localize_cli if args.task == "localize" else detect_cli).train_main(args) or 0)


def config_from_args(args: argparse.Namespace, task: str) -> Any:
    raise AssertionError("interim module: legacy_main trains")


def summary(metrics: dict[str, Any], config: Any, out: Any) -> list[str]:
    return []
