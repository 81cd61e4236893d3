"""`cnnkit train localize|detect`: a class and one box per image, or a YOLO-style detector, on
FashionScenes (generated from Fashion-MNIST) or your COCO / YOLO data."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ._text import count
from .scene_options import add_scene_arguments, refuse_generated_only

DEFAULT_MODEL = "hongong_cnn"
BOX_LOSSES = ("mse", "smooth_l1", "giou")  # tasks/localization/loss.py (not imported: parser start-up)


def parse_strides(text: str) -> list[int]:
    """``--strides S[,S]`` as increasing integers."""
    try:
        strides = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes integers separated by commas (e.g. 8 or 8,16), got {text!r}"
        ) from None
    if strides != sorted(set(strides)) or min(strides) < 1:
        raise argparse.ArgumentTypeError(f"must be increasing and >= 1, got {text!r}")
    return strides


def add_arguments(p: argparse.ArgumentParser, task: str) -> None:
    """The options of ``cnnkit train localize`` or ``cnnkit train detect`` (the common ones are
    ``cnnkit train``'s)."""
    add_scene_arguments(p, task)
    p.add_argument("--head-width", type=int, metavar="C", help="channels of the task head (default 128)")
    p.add_argument(
        "--backbone-weights",
        metavar="RUN_OR_FILE",
        help="start the backbone from this classification run or weights file (same --model and options)",
    )
    if task == "detect":
        p.add_argument(
            "--anchors",
            type=int,
            metavar="K",
            help="anchors per level, from k-means on the training boxes (default 3)",
        )
        p.add_argument(
            "--strides",
            type=parse_strides,
            metavar="S[,S]",
            help="grid strides, e.g. 8 or 8,16 for two scales (default 8)",
        )
    else:
        p.add_argument("--box-loss", choices=BOX_LOSSES, help="box loss (default giou)")
        p.add_argument(
            "--box-weight", type=float, metavar="W", help="weight of the box loss (default: per loss)"
        )


def config_from_args(args: argparse.Namespace, task: str) -> Any:
    """The SceneConfig of a parsed ``cnnkit train localize|detect`` command line: the flags over
    ``--config`` over the task's defaults, checked before any data is made.

    Raises:
        UsageError: a setting the task cannot use, an unknown model (with close matches), model
            options its builder does not take, or a ``--backbone-weights`` that does not exist.
    """
    from ..runs.config import SceneConfig
    from .train import apply_flags

    base: dict[str, Any] = {}
    if args.config:
        try:
            raw = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--config {args.config}: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("run", raw), dict):
            raise UsageError(f"--config {args.config}: a config must be a JSON object")
        base = dict(raw.get("run", raw))  # a run's config.json works too
        if base.get("task", task) != task:
            raise UsageError(f"--config {args.config} is a {base['task']} config; this trains {task}")
        base.pop("task", None)
    own = {
        "canvas": args.canvas,
        "train_images": args.train_images,
        "item_sizes": args.item_sizes,
        "clutter": args.clutter,
        "noise": args.noise,
        "min_objects": getattr(args, "min_objects", None),
        "max_objects": getattr(args, "max_objects", None),
        "head_width": args.head_width,
        "backbone_weights": args.backbone_weights,
        "anchors": getattr(args, "anchors", None),
        "strides": getattr(args, "strides", None),
        "box_loss": getattr(args, "box_loss", None),
        "box_weight": getattr(args, "box_weight", None),
    }
    apply_flags(base, args, own)
    base.setdefault("model", DEFAULT_MODEL)
    config = SceneConfig.for_task(task, **base)
    if not config.generated():  # with COCO / YOLO files they would be ignored
        refuse_generated_only(args, config.data)
    return _check_up_front(config)


def _check_up_front(config: Any) -> Any:
    """What SceneConfig.validate leaves to training time, checked before any data is made."""
    import math

    from ..engine.device import pick_device
    from ..models import model_entry
    from ..models._registry import check_model_options

    model_entry(config.model)  # unknown names fail with close matches
    try:
        check_model_options(config.model, config.model_kwargs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not math.isfinite(config.lr):
        raise UsageError(f"--lr must be a finite number, got {config.lr}")
    if config.backbone_weights is not None and not Path(config.backbone_weights).exists():
        raise UsageError(
            f"--backbone-weights {config.backbone_weights}: no such run folder or file; give a "
            "`cnnkit train classify` run folder (its best.safetensors) or a weights file"
        )
    if config.task == "localize" and config.box_loss not in BOX_LOSSES:
        raise UsageError(f"--box-loss must be one of {', '.join(BOX_LOSSES)}, got {config.box_loss!r}")
    if config.data.partition(":")[0] not in ("coco", "yolo") and config.data not in _scene_names():
        raise UsageError(
            f"--data must be one of fashion-scenes, fashion-mnist, coco:FILE.json or yolo:FOLDER, "
            f"got {config.data!r}"
        )
    pick_device(config.device)  # unknown or absent devices
    return config


def _scene_names() -> tuple[str, ...]:
    from ..tasks.detection.data import SCENE_NAMES

    return SCENE_NAMES


def summary(metrics: dict[str, Any], config: Any, out: Path) -> Iterator[str]:
    test = metrics["test"]
    if config.task == "detect":
        scores = f"test mAP@0.5 {test['map_50']:.3f}, mAP@[.5:.95] {test['map']:.3f}"
    else:
        scores = (
            f"test mean IoU {test['mean_iou']:.3f}, accuracy {test['accuracy']:.3f}, "
            f"accuracy at IoU>=0.5 {test['accuracy_iou50']:.3f}"
        )
    yield (
        f"{scores} on {metrics['test_images']} images after {count(metrics['epochs_run'], 'epoch')} (best "
        f"{metrics['best_epoch']}, {metrics['train_seconds']:.0f} s of training, "
        f"{metrics['wall_seconds_this_session']:.0f} s in all); run folder: {out}"
    )
