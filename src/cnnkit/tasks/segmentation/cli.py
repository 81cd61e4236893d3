"""`cnnkit train --task segment`: the segmentation options and the training entry point.

``cnnkit.cli.train`` owns the common options (--model, --data, --epochs, --batch-size, --lr,
--seed, --out, --small-input, --limit-train, --limit-test, --device, --patience, ...); this module
adds only the segmentation ones and turns the parsed namespace into a SegmentConfig.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ...cli.train import parse_model_options
from ...errors import UsageError
from .run import ALL_HEADS, SegmentConfig, train_segmentation


def _add(parser: argparse.ArgumentParser, flag: str, **kwargs: object) -> None:
    # Another task may already define a shared option (e.g. --weights); keep the first one.
    if flag not in parser._option_string_actions:
        parser.add_argument(flag, **kwargs)  # type: ignore[arg-type]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the segmentation options to the ``train`` parser (all default to None)."""
    _add(
        parser,
        "--head",
        choices=ALL_HEADS,
        help="segment: fcn32s, fcn16s, fcn8s (default), unet, or maskrcnn (instances)",
    )
    _add(
        parser,
        "--dice-weight",
        type=float,
        help="segment: add this weight x soft Dice loss to the pixel cross-entropy (default 0)",
    )
    _add(
        parser,
        "--model-option",
        action="append",
        metavar="KEY=VALUE",
        help="segment: a backbone builder option, VALUE in JSON (e.g. depth=2); repeatable",
    )
    _add(parser, "--image-size", type=int, help="segment: resize image + mask folders to this side")
    _add(
        parser,
        "--backbone-weights",
        help="segment: start the backbone from this classification run (same --model)",
    )
    _add(
        parser,
        "--weights",
        help="segment --head maskrcnn: COCO weights for maskrcnn_resnet50_fpn (file or name)",
    )


def config_from_args(args: argparse.Namespace) -> SegmentConfig:
    """The SegmentConfig for a parsed ``cnnkit train --task segment`` command line.

    Raises:
        UsageError: classification-only options, or settings SegmentConfig refuses.
    """
    for flag, value in (("--resume", args.resume), ("--config", args.config)):
        if value:
            raise UsageError(f"{flag} is for classification runs; not supported with --task segment")
    if getattr(args, "preset", "course") not in (None, "course"):
        raise UsageError(f"--preset {args.preset} is for classification runs")
    defaults = SegmentConfig()
    head = getattr(args, "head", None) or defaults.head
    data = "fashion-scenes" if args.data in (None, "fashion-mnist") else args.data
    kwargs = parse_model_options(getattr(args, "model_option", None) or [])
    if args.small_input:
        kwargs["small_input"] = True
    values = {
        "model": args.model,
        "head": head,
        "data": data,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "optimizer": args.optimizer,
        "patience": args.patience,
        "dice_weight": getattr(args, "dice_weight", None),
        "seed": args.seed,
        "device": args.device,
        "limit_train": getattr(args, "train_images", None) or args.limit_train,
        "limit_test": args.limit_test,
        "image_size": getattr(args, "image_size", None),
        "weights": getattr(args, "weights", None),
        "backbone_weights": getattr(args, "backbone_weights", None),
        "deterministic": bool(args.deterministic),
    }
    if head == "maskrcnn":
        values.update({k: v for k, v in MASKRCNN_DEFAULTS.items() if values[k] is None})
    config = SegmentConfig(
        **{k: v for k, v in values.items() if v is not None},
        model_kwargs=kwargs,
        scenes=_scene_options(args),
    )
    config.validate()
    return config


def _scene_options(args: argparse.Namespace) -> dict[str, object]:
    # The scene options are defined by --task detect (shared with localize and segment).
    from .data import DEFAULT_SCENES

    options: dict[str, object] = {}
    for key in ("canvas", "min_objects", "max_objects", "clutter", "noise"):
        value = getattr(args, key, None)
        if value is not None and value != getattr(DEFAULT_SCENES, key):
            options[key] = value
    sizes = getattr(args, "item_sizes", None)
    if sizes:
        try:
            low, high = (int(v) for v in str(sizes).split(","))
        except ValueError:
            raise UsageError(f"--item-sizes takes MIN,MAX (two integers), got {sizes!r}") from None
        if (low, high) != (DEFAULT_SCENES.min_size, DEFAULT_SCENES.max_size):
            options.update(min_size=low, max_size=high)
    return options


# Mask R-CNN's five losses want a smaller batch and AdamW; these replace the FCN defaults.
MASKRCNN_DEFAULTS = {"batch_size": 8, "lr": 1e-3, "optimizer": "adamw", "epochs": 4}


def train_main(args: argparse.Namespace) -> int:
    """Run ``cnnkit train --task segment``; prints the test scores and the run folder."""
    from ...models import model_entry
    from .instance import TORCHVISION_MASK_RCNN

    config = config_from_args(args)
    if config.model not in TORCHVISION_MASK_RCNN:
        model_entry(config.model)  # fail fast, with close matches
    out = Path(args.out or f"runs/{config.model}-{config.head}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"run folder: {out}", file=sys.stderr)
    metrics = train_segmentation(config, out, progress=not args.no_progress)
    if config.head == "maskrcnn":
        print(
            f"test mask mAP {metrics['test_segm_map']:.4f} (mAP@0.5 {metrics['test_segm_map_50']:.4f}), "
            f"box mAP {metrics['test_bbox_map']:.4f} after {metrics['epochs_run']} epochs "
            f"({metrics['train_seconds']:.0f} s of training); run folder: {out}"
        )
    else:
        print(
            f"test mIoU {metrics['test_miou']:.4f}, pixel accuracy "
            f"{metrics['test_pixel_accuracy']:.4f} after {metrics['epochs_run']} epochs "
            f"({metrics['train_seconds']:.0f} s of training); run folder: {out}"
        )
    return 0
