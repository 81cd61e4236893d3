"""`cnnkit train segment`: the segmentation options (FCN / U-Net heads, or Mask R-CNN instances).

`cnnkit.cli.train` owns the common options (--model, --data, --epochs, --batch-size, --lr, --seed,
--out, --limit-train, --limit-test, --device, --patience, --config, --resume, ...); this module
adds the FashionScenes options and the segmentation ones and turns the parsed command line into
a SegmentConfig. --train-images is the number of training scenes (``limit_train``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ._text import count
from .scene_options import GENERATED_ONLY, add_scene_arguments, refuse_generated_only

# The FashionScenes options and the SegmentConfig.scenes key each one sets.
SCENE_KEYS = {
    "canvas": "canvas",
    "min_objects": "min_objects",
    "max_objects": "max_objects",
    "clutter": "clutter",
    "noise": "noise",
}

# Refused with a mask folder, which keeps its own size (--image-size resizes it); --train-images
# is --limit-train there, so it stays.
FOLDER_IGNORED = {"canvas": "--canvas", **{k: v for k, v in GENERATED_ONLY.items() if k != "train_images"}}


def add_arguments(p: argparse.ArgumentParser, task: str) -> None:
    from ..runs.config import SEGMENT_HEADS

    add_scene_arguments(p, task)
    p.add_argument(
        "--head",
        choices=SEGMENT_HEADS,
        help="fcn32s, fcn16s, fcn8s (default), unet, or maskrcnn (instances)",
    )
    p.add_argument(
        "--dice-weight",
        type=float,
        help="add this weight x soft Dice loss to the pixel cross-entropy (default 0)",
    )
    p.add_argument("--image-size", type=int, metavar="N", help="resize image + mask folders to N x N")
    p.add_argument(
        "--backbone-weights",
        help="FCN / U-Net: start the backbone from this classification run (same --model)",
    )
    p.add_argument(
        "--weights",
        help="--head maskrcnn with maskrcnn_resnet50_fpn(_v2): COCO weights (file or name)",
    )


def _config_file(path: str) -> dict[str, Any]:
    """The settings of a --config file (a run's config.json works too), as given."""
    from ..runs.config import SegmentConfig

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--config {path} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("run", raw), dict):
        raise UsageError(f"--config {path}: a config must be a JSON object")
    settings = dict(raw.get("run", raw))
    SegmentConfig.from_dict({**settings, "task": "segment"})  # unknown keys and types, up front
    return settings


def _scene_settings(args: argparse.Namespace) -> dict[str, Any]:
    scenes = {
        key: getattr(args, flag) for flag, key in SCENE_KEYS.items() if getattr(args, flag, None) is not None
    }
    if args.item_sizes is not None:
        scenes["min_size"], scenes["max_size"] = args.item_sizes
    return scenes


def config_from_args(args: argparse.Namespace, task: str) -> Any:
    """The SegmentConfig of a parsed ``cnnkit train segment`` command line (flags over --config).

    Raises:
        UsageError: a setting SegmentConfig refuses, impossible scenes or an unknown model.
    """
    from ..models import model_entry
    from ..runs.config import MASKRCNN_DEFAULTS, SegmentConfig
    from ..tasks.segmentation.data import DEFAULT_SCENES, SCENE_NAMES, scenes_with
    from ..tasks.segmentation.instance import TORCHVISION_MASK_RCNN
    from .train import apply_flags

    base = _config_file(args.config) if args.config else {}
    own = {
        "limit_train": args.train_images or args.limit_train,
        "head": args.head,
        "dice_weight": args.dice_weight,
        "image_size": args.image_size,
        "weights": args.weights,
        "backbone_weights": args.backbone_weights,
    }
    apply_flags(base, args, own)
    base["task"] = "segment"
    if base.get("data", "fashion-mnist") == "fashion-mnist":  # the other tasks' default data
        base["data"] = "fashion-scenes"
    scenes = {**(base.get("scenes") or {}), **_scene_settings(args)}
    # Only what differs from the documented scenes is recorded (as before).
    base["scenes"] = {k: v for k, v in scenes.items() if v != getattr(DEFAULT_SCENES, k, None)}
    if base.get("head") == "maskrcnn":
        for key, value in MASKRCNN_DEFAULTS.items():
            base.setdefault(key, value)
    config = SegmentConfig.from_dict(base)
    if config.data not in SCENE_NAMES:  # an image + mask folder: the scene options do nothing
        refuse_generated_only(args, config.data, FOLDER_IGNORED)
    scenes_with(config.scenes)  # impossible scenes fail before any data is made
    if config.model not in TORCHVISION_MASK_RCNN:
        try:
            model_entry(config.model)  # unknown names fail with close matches
        except ValueError as exc:
            raise UsageError(f"--model: {exc}") from None
    elif config.head != "maskrcnn":
        raise UsageError(
            f"--model {config.model} is a Mask R-CNN; it takes --head maskrcnn, not {config.head}"
        )
    return config


def summary(metrics: dict[str, Any], config: Any, out: Path) -> Iterator[str]:
    if config.head == "maskrcnn":
        yield (
            f"test mask mAP {metrics['test_segm_map']:.4f} (mAP@0.5 {metrics['test_segm_map_50']:.4f}), "
            f"box mAP {metrics['test_bbox_map']:.4f} after {count(metrics['epochs_run'], 'epoch')} "
            f"({metrics['train_seconds']:.0f} s of training); run folder: {out}"
        )
    else:
        yield (
            f"test mIoU {metrics['test_miou']:.4f}, pixel accuracy "
            f"{metrics['test_pixel_accuracy']:.4f} after {count(metrics['epochs_run'], 'epoch')} "
            f"({metrics['train_seconds']:.0f} s of training); run folder: {out}"
        )
