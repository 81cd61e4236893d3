"""Run folders of the localization and detection tasks, and what training and inference share.

A run folder holds ``config.json`` (task, model name and kwargs, head settings, image size,
class names, anchors, data and training settings, seed, versions, machine, wall time),
``best.safetensors`` (weights of the best validation epoch), ``metrics.json`` (test metrics)
and ``samples.png`` (predictions on test images). ``load_run`` rebuilds the model from them.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import DataError, UsageError
from ...io.atomic import atomic_write_text
from ...io.weights import load_state_dict_file, load_strict, metadata_json, save_weights

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "best.safetensors"
METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.png"
TASKS = ("localize", "detect")


def seed_all(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch generator for batch order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 Tensor[N, C, H, W] -> float Tensor[N, C, H, W] in 0..1 on ``device``, channels-last.

    Channels-last makes PyTorch's CPU convolutions and pooling about 1.5x faster here.
    """
    x = images.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def default_run_dir(task: str, model: str) -> Path:
    return Path("runs") / f"{task}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def environment() -> dict[str, Any]:
    """Versions and machine, recorded in every config.json."""
    import platform

    import torchvision

    from ... import __version__

    return {
        "versions": {
            "cnnkit": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def save_run_weights(model: nn.Module, out: Path, config: dict[str, Any]) -> None:
    save_weights(
        model.state_dict(), out / WEIGHTS_FILE, metadata_json(task=config["task"], model=config["model"])
    )


def read_config(run: str | os.PathLike[str]) -> dict[str, Any]:
    """The config.json of a localization or detection run folder.

    Raises:
        UsageError: not a run folder of these tasks (the message says what is missing).
    """
    run = Path(run)
    path = run / CONFIG_FILE
    if not path.is_file():
        raise UsageError(f"{run} is not a run folder: {CONFIG_FILE} is missing (train one with cnnkit train)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} cannot be read: {exc}") from None
    task = config.get("task") if isinstance(config, dict) else None
    if task not in TASKS:
        raise UsageError(
            f"{run} is a {task or 'classification'} run; this needs a run of --task {' or '.join(TASKS)}"
        )
    for key in ("model", "model_kwargs", "in_chans", "image_size", "class_names", "head"):
        if key not in config:
            raise DataError(f"{path} has no {key!r}; it was not written by cnnkit train --task {task}")
    return config


def build_task_model(config: dict[str, Any]) -> nn.Module:
    """A fresh (untrained) Localizer or YoloDetector as ``config`` describes it."""
    from ...models import create_model

    backbone = create_model(
        config["model"], num_classes=0, in_chans=config["in_chans"], **config["model_kwargs"]
    )
    num_classes = len(config["class_names"])
    if config["task"] == "localize":
        from ..localization.model import Localizer

        return Localizer(backbone, num_classes, config["in_chans"], config["image_size"], **config["head"])
    from .model import YoloDetector

    anchors = [torch.tensor(level, dtype=torch.float32) for level in config["anchors"]]
    return YoloDetector(
        backbone, num_classes, config["in_chans"], config["image_size"], anchors, **config["head"]
    )


def load_run(
    run: str | os.PathLike[str], device: torch.device | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """(model with the run's best weights, in eval mode; its config).

    Raises:
        UsageError: not a run folder of these tasks.
        WeightsError: weights that do not fit the model described by config.json.
    """
    config = read_config(run)
    model = build_task_model(config)
    path = Path(run) / WEIGHTS_FILE
    if not path.is_file():
        raise UsageError(f"{run} has no {WEIGHTS_FILE}; the run did not finish an epoch")
    load_strict(model, load_state_dict_file(path), str(path))
    model.to(device or torch.device("cpu")).eval()
    return model, config
