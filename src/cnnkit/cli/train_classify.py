"""`cnnkit train classify`: the classification options (the course's CNNs and the model zoo)."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ._text import count

PRESETS = ("course", "fast", "fast94")  # tasks.classify.presets.PRESETS (no torch import here)
PRECISIONS = ("auto", "bf16", "fp32")  # engine.precision.PRECISIONS (cli/ imports no torch up front)


def parse_image_size(text: str) -> list[int]:
    """``--image-size H`` (a square) or ``HxW``, as [H, W]."""
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"takes H or HxW in pixels (e.g. 28 or 64x48), got {text!r}")
    values = [int(p) for p in parts]
    if not all(4 <= v <= 4096 for v in values):
        raise argparse.ArgumentTypeError(f"sides must be between 4 and 4096 pixels, got {text!r}")
    return values * 2 if len(values) == 1 else values


def add_arguments(p: argparse.ArgumentParser, task: str) -> None:
    from ..runs.config import IMAGE_FOLDER_RESIZE
    from .train import _Given, add_image_folder_options

    p.add_argument(
        "--image-size",
        type=parse_image_size,
        metavar="H[xW]",
        help="image folders are resized to this (default: the model's input, 28 for the course's CNNs)",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help="image folders: 1 (grayscale) or 3 (RGB) (default: the model's, 1 for the course's CNNs)",
    )
    add_image_folder_options(p, resize_default=IMAGE_FOLDER_RESIZE)
    p.add_argument(
        "--test-fraction",
        type=float,
        help="image folders without test/: share of the images held out for testing (default 0.1)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help="share of the training images held out for validation and early stopping "
        "(default 0.2: the course's 48,000 / 12,000)",
    )
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="course",
        action=_Given,
        help="training recipe: course (the book's, the default), fast (92 %% test accuracy on "
        "Fashion-MNIST in 3 epochs) or fast94 (94 %% in 12); flags and the settings a --config file "
        "names stand over the preset's",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        action=_Given,
        help="training precision: bf16 autocast with channels-last, or fp32 (the course's exact numerics); "
        "auto (the default) is bf16 where the CPU or GPU has native bf16, fp32 elsewhere",
    )
    p.add_argument(
        "--max-shift",
        type=int,
        metavar="PIXELS",
        help="shift every training batch by up to PIXELS at random (the fast preset adds it to its flips)",
    )
    p.add_argument(
        "--cutout",
        type=int,
        metavar="PIXELS",
        help="blank a PIXELS×PIXELS square at a random place in every training image (cutout; default: none)",
    )
    p.add_argument(
        "--whiten",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make the first convolution a frozen patch-whitening layer computed from the training "
        "images (the fast preset's default; --no-whiten: a random start)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="run the model through torch.compile (slower on the CPUs measured; its time is reported apart)",
    )


def config_from_args(args: argparse.Namespace, task: str) -> Any:
    """The RunConfig of a parsed ``cnnkit train classify`` command line (flags over --config)."""
    from ..runs.config import RunConfig
    from .train import apply_flags

    # The --config file, read once: its settings, the names it gives, and whether it is a run's record.
    settings, saved_run = RunConfig.read_settings(args.config) if args.config else ({}, False)
    base = RunConfig.from_settings(settings, args.config).to_dict() if args.config else {}
    file_keys = set(settings)
    given = getattr(args, "given", set())
    own = {
        "max_shift": args.max_shift,
        "cutout": args.cutout,
        "whiten": args.whiten,
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "image_size": args.image_size,
        "channels": args.channels,
        "resize": args.resize,
        "on_error": args.on_error,
        "compile": args.compile,
        "preset": args.preset if "preset" in given else None,
    }
    overrides = apply_flags(base, args, own)
    base.setdefault("model", "hongong_cnn")
    explicit = {k for k, v in overrides.items() if v is not None}
    if _precision_applies(args, given, base.get("preset"), file_keys):
        from ..engine.device import pick_device
        from ..engine.precision import precision_settings

        device = pick_device(base.get("device"))
        base["amp"], base["channels_last"] = precision_settings(args.precision, device)
        explicit |= {"amp", "channels_last"}
    if overrides["preset"] not in (None, "course"):
        from ..tasks.classify.presets import apply_preset

        # A settings file's own values stand over the preset's, as flags do; a run's saved
        # config.json lists every setting, so there the preset sets its own.
        explicit |= set() if saved_run else file_keys
        base = apply_preset(overrides["preset"], base, explicit=explicit)
    return _check_up_front(RunConfig.from_dict(base))


def _precision_applies(
    args: argparse.Namespace, given: set[str], preset: str | None, file_keys: set[str]
) -> bool:
    """Whether ``--precision`` sets the run's amp / channels_last: when given; by default
    (``auto``) unless a speed preset (which picks its own) or the --config file (``file_keys``:
    the settings it names) does (a run's saved config keeps its precision)."""
    if "precision" in given:
        return True
    if preset not in (None, "course"):
        return False
    return not ({"amp", "channels_last"} & file_keys)


def _check_up_front(config):
    """What RunConfig.validate leaves to training time, checked before any data is read."""
    from ..data.splits import scan_image_splits
    from ..engine.device import pick_device
    from ..engine.optimizers import OPTIMIZERS
    from ..errors import DataError
    from ..models import model_entry
    from ..models._registry import check_model_options
    from ..runs.classify import data_kind, image_settings, model_options

    model_entry(config.model)  # unknown names fail with close matches
    try:
        check_model_options(config.model, config.model_kwargs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if config.optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    if not math.isfinite(config.lr):
        raise UsageError(f"--lr must be a finite number, got {config.lr}")
    kind = data_kind(config.data)  # a path that does not exist
    if kind == "image-folder":
        try:
            scan_image_splits(config.data)  # layout and classes, nothing decoded yet
        except DataError as exc:
            raise UsageError(f"--data: {exc}") from None
        size, channels = image_settings(config)
        model_options(dataclasses.replace(config, image_size=size, channels=channels))
    elif config.image_size is not None or config.channels is not None:
        raise UsageError(
            f"--image-size and --channels apply to image folders; {config.data} is {kind} data (28x28x1)"
        )
    pick_device(config.device)  # unknown or absent devices
    return config


def summary(metrics: dict[str, Any], config: Any, out: Path) -> Iterator[str]:
    yield (
        f"test accuracy {metrics['test_accuracy']:.4f} after {count(metrics['epochs_run'], 'epoch')} "
        f"(best epoch {metrics['best_epoch']}, {metrics['train_seconds']:.0f} s of training, "
        f"{_precision_label(config)}); "
        f"run folder: {out}"
    )
    skipped = metrics.get("skipped_files", [])
    if skipped:
        yield f"{count(len(skipped), 'bad image file')} left out (--on-error skip), listed in metrics.json:"
        yield from (f"  {reason}" for reason in skipped)
    if "compile_seconds" in metrics:
        what = "the model" if config.compile else "the max-pool kernels"
        yield f"compiling ({what}): {metrics['compile_seconds']:.1f} s of that, in the first steps"


def _precision_label(config: Any) -> str:
    from ..engine.precision import precision_name

    return precision_name(config.amp, config.channels_last)
