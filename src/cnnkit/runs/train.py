"""Train any task into a run folder: its config picks the task's run (``config.task``)."""

from __future__ import annotations

import os
from typing import Any

from .config import TrainConfig


def train_run(
    config: TrainConfig, out: str | os.PathLike[str], resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train as ``config`` says and fill the run folder ``out``; returns the test metrics.

    With ``resume``, ``out`` must be an earlier run folder of the same task: training continues
    from its ``last.ckpt`` and ends bit-identical to an uninterrupted run on the same machine.

    Raises:
        UsageError: a non-empty ``out`` without ``resume``, or a ``resume`` without a checkpoint.
    """
    if config.task == "classify":
        from .classify import train_classify

        return train_classify(config, out, resume=resume, progress=progress)  # type: ignore[arg-type]
    if config.task in ("localize", "detect"):
        from .scenes import train_scenes

        return train_scenes(config, out, resume=resume, progress=progress)  # type: ignore[arg-type]
    from .segment import train_segment

    return train_segment(config, out, resume=resume, progress=progress)  # type: ignore[arg-type]
