"""Train any task into a run folder: its config picks the task's run (``config.task``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .folder import release_folder


def train_run(
    config: TrainConfig, out: str | os.PathLike[str], resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train as ``config`` says and fill the run folder ``out``; returns the test metrics.

    With ``resume``, ``out`` must be an earlier run folder of the same task: training continues
    from its ``last.ckpt`` and ends bit-identical to an uninterrupted run on the same machine.

    The folder is this process's while it trains (``folder.claim_folder``): a second writer
    gets a UsageError naming the first.

    Raises:
        UsageError: a non-empty ``out`` without ``resume``, a ``resume`` without a checkpoint, or
            a folder another process is writing.
    """
    try:
        if config.task == "classify":
            from .classify import train_classify

            return train_classify(config, out, resume=resume, progress=progress)  # type: ignore[arg-type]
        if config.task in ("localize", "detect"):
            from .scenes import train_scenes

            return train_scenes(config, out, resume=resume, progress=progress)  # type: ignore[arg-type]
        from .segment import train_segment

        return train_segment(config, out, resume=resume, progress=progress)  # type: ignore[arg-type]
    finally:
        release_folder(Path(out))  # claimed by open_folder; a crash leaves it to atexit
