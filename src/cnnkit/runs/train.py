"""Train any task into a run folder: its config picks the task's run (``config.task``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .folder import release_folder


def train_run(
    config: TrainConfig,
    out: str | os.PathLike[str],
    resume: bool = False,
    progress: bool = True,
    on_scored: Callable[[dict[str, Any]], None] | None = None,
    on_started: Callable[[], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train as ``config`` says and fill the run folder ``out``; returns the test metrics.

    With ``resume``, ``out`` must be an earlier run folder of the same task: training continues
    from its ``last.ckpt`` and ends bit-identical to an uninterrupted run on the same machine.

    The folder is this process's while it trains (``folder.claim_folder``): a second writer
    gets a UsageError naming the first.

    ``on_scored(metrics)`` is called once the test metrics are known: for classification before
    the curves and report.html are drawn (the CLI prints the accuracy then), for the other tasks
    at the end. ``on_started()`` is called once the settings, data and model are checked and the
    folder holds its config.json, just before the first epoch (the CLI names the folder then).
    ``report(text)`` receives an image folder's class balance over its splits (classification).

    Raises:
        UsageError: a non-empty ``out`` without ``resume``, a ``resume`` without a checkpoint, or
            a folder another process is writing.
    """
    try:
        if config.task == "classify":
            from .classify import train_classify

            return train_classify(
                config, out, resume=resume, progress=progress, on_scored=on_scored, on_started=on_started,
                report=report,
            )  # type: ignore[arg-type]  # fmt: skip
        if config.task in ("localize", "detect"):
            from .scenes import train_scenes

            metrics = train_scenes(config, out, resume=resume, progress=progress, on_started=on_started)  # type: ignore[arg-type]
        else:
            from .segment import train_segment

            metrics = train_segment(config, out, resume=resume, progress=progress, on_started=on_started)  # type: ignore[arg-type]
        if on_scored is not None:
            on_scored(metrics)
        return metrics
    finally:
        release_folder(Path(out))  # claimed by open_folder; a crash leaves it to atexit
