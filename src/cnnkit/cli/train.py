"""`cnnkit train --model M --data fashion-mnist`: train and write a run folder.

Without --out the run goes to runs/<model>-<date-time>. `--resume RUN_DIR` continues an
interrupted run exactly where its last finished epoch left it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError

# --task -> module under cnnkit.tasks with add_arguments(parser) and train_main(args)
TASK_MODULES = {
    "localize": "localization.cli",
    "detect": "detection.cli",
    "segment": "segmentation.cli",
}
PRESETS = ("course", "fast")
# Run settings: with --resume they come from the run folder, so giving one is a usage error.
RUN_SETTINGS = (
    "model",
    "data",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "patience",
    "seed",
    "out",
    "small_input",
    "model_option",
    "limit_train",
    "limit_test",
    "device",
    "preset",
    "max_grad_norm",
    "max_shift",
    "val_fraction",
    "test_fraction",
    "image_size",
    "channels",
    "compile",
    "deterministic",
    "config",
)

CLASSIFY_ONLY_FLAGS = (
    ("--max-shift", "max_shift"),
    ("--max-grad-norm", "max_grad_norm"),
    ("--compile", "compile"),
    ("--val-fraction", "val_fraction"),
    ("--test-fraction", "test_fraction"),
    ("--channels", "channels"),
)


class _Given(argparse.Action):
    """Store the value and remember that the flag was given: a default must not override --config."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def parse_image_size(text: str) -> int | list[int]:
    """``--image-size H`` (a square: an int, as the segment task takes it) or ``HxW`` ([H, W])."""
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"takes H or HxW in pixels (e.g. 28 or 64x48), got {text!r}")
    values = [int(p) for p in parts]
    if not all(4 <= v <= 4096 for v in values):
        raise argparse.ArgumentTypeError(f"sides must be between 4 and 4096 pixels, got {text!r}")
    return values[0] if len(values) == 1 else values


def _task_module(task: str):
    try:
        return importlib.import_module(f"cnnkit.tasks.{TASK_MODULES[task]}")
    except ModuleNotFoundError:
        return None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model and write a run folder", description=__doc__)
    p.add_argument("--task", default="classify", choices=["classify", *TASK_MODULES], help="what to learn")
    p.add_argument("--model", default=None, help="registered model name (default hongong_cnn)")
    p.add_argument(
        "--data",
        default="fashion-mnist",
        action=_Given,
        help="'fashion-mnist', a folder of MNIST-format IDX files, or a folder of images with one "
        "sub-folder per class (or train/, val/, test/ sub-folders holding those)",
    )
    p.add_argument(
        "--image-size",
        type=parse_image_size,
        metavar="H[xW]",
        help="image folders are resized to this (default: the model's input, 28 for the course's "
        "CNNs); segment: resize image + mask folders to this side",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help="image folders: 1 (grayscale) or 3 (RGB) (default: the model's, 1 for the course's CNNs)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        help="image folders without test/: share of the images held out for testing (default 0.1)",
    )
    p.add_argument("--epochs", type=int, help="maximum epochs (default 20; early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, help="batch size (default 32, the course's)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3, Adam's)")
    p.add_argument("--optimizer", help="adam (default), adamw, sgd or rmsprop")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 2)")
    p.add_argument("--seed", type=int, default=42, action=_Given, help="random seed (default 42)")
    p.add_argument("--out", help="run folder (default runs/<model>-<time>)")
    p.add_argument("--small-input", action="store_true", help="the model's 28x28 variant (zoo models)")
    p.add_argument(
        "--model-option",
        action="append",
        metavar="KEY=VALUE",
        help="a model (or backbone) builder option, VALUE in JSON (e.g. depth=2, widths=[32,64]); repeatable",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help="share of the training images held out for validation and early stopping "
        "(default 0.2: the course's 48,000 / 12,000)",
    )
    p.add_argument("--limit-train", type=int, help="use only N training images (quick tries, tests)")
    p.add_argument("--limit-test", type=int, help="evaluate on only N test images")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.add_argument(
        "--preset", choices=PRESETS, default="course", action=_Given, help="training recipe (default course)"
    )
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms only")
    p.add_argument(
        "--max-grad-norm", type=float, help="clip the gradient norm to this and stop on a non-finite one"
    )
    p.add_argument(
        "--max-shift",
        type=int,
        metavar="PIXELS",
        help="shift every training batch by up to PIXELS at random (the fast preset adds it to its flips)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="run the model through torch.compile (slower on the CPUs measured; its time is reported apart)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--config", help="JSON file with run settings (flags override it)")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    classify_dests = {action.dest for action in p._actions}
    for task in TASK_MODULES:
        module = _task_module(task)
        if module is not None:
            module.add_arguments(p)
    # Flags only the other tasks read: giving one for classification is an error, not a no-op.
    task_only = {a.dest: (a.option_strings[0], a.default) for a in p._actions if a.dest not in classify_dests}
    p.set_defaults(func=run, task_only_flags=task_only)


def parse_model_options(items: list[str]) -> dict[str, Any]:
    """``--model-option KEY=VALUE`` flags as builder keyword arguments (values read as JSON)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--model-option takes KEY=VALUE (e.g. depth=2), got {item!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text  # a bare word such as a name
    return options


def _classify_config(args: argparse.Namespace):
    from ..runs.config import RunConfig

    base = RunConfig.load(args.config).to_dict() if args.config else {}
    given = getattr(args, "given", set())
    overrides = {
        "model": args.model,
        "data": args.data if "data" in given else None,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "optimizer": args.optimizer,
        "patience": args.patience,
        "seed": args.seed if "seed" in given else None,
        "limit_train": args.limit_train,
        "limit_test": args.limit_test,
        "device": args.device,
        "deterministic": args.deterministic or None,
        "max_grad_norm": args.max_grad_norm,
        "max_shift": args.max_shift,
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "image_size": [args.image_size] * 2 if isinstance(args.image_size, int) else args.image_size,
        "channels": args.channels,
        "compile": args.compile,
        "preset": args.preset if "preset" in given else None,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    base.setdefault("model", "hongong_cnn")
    if args.small_input:
        base.setdefault("model_kwargs", {})["small_input"] = True
    if getattr(args, "model_option", None):
        base["model_kwargs"] = {**(base.get("model_kwargs") or {}), **parse_model_options(args.model_option)}
    if overrides["preset"] == "fast":
        from ..tasks.classify.presets import apply_preset

        base = apply_preset("fast", base, explicit={k for k, v in overrides.items() if v is not None})
    return _check_up_front(RunConfig.from_dict(base))


def _check_up_front(config):
    """What RunConfig.validate leaves to training time, checked before any data is read."""
    from ..data.splits import scan_image_splits
    from ..engine.device import pick_device
    from ..engine.trainer import OPTIMIZERS
    from ..errors import DataError
    from ..models import model_entry
    from ..models._registry import check_model_options
    from ..runs.train import data_kind, image_settings, model_options

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


def _check_resume_flags(args: argparse.Namespace) -> None:
    given = getattr(args, "given", set())
    flags = [
        f"--{name.replace('_', '-')}"
        for name in RUN_SETTINGS
        if name in given
        or (name not in ("data", "seed", "preset") and getattr(args, name) not in (None, False))
    ]
    if flags:
        raise UsageError(
            f"--resume continues {args.resume} with the settings saved in it; drop {', '.join(flags)}"
        )


def run(args: argparse.Namespace) -> int:
    if args.task != "classify":
        module = _task_module(args.task)
        if module is None:
            raise UsageError(f"--task {args.task} is not available in this installation")
        # Classifier-only flags that no other task reads: an error, not a silent no-op.
        classify_only = [f for f, dest in CLASSIFY_ONLY_FLAGS if getattr(args, dest, None) is not None]
        if classify_only:
            raise UsageError(
                f"{', '.join(classify_only)} {'applies' if len(classify_only) == 1 else 'apply'} only to "
                f"classification; drop {'it' if len(classify_only) == 1 else 'them'} for --task {args.task}"
            )
        if isinstance(getattr(args, "image_size", None), list):
            raise UsageError(f"--task {args.task} takes one side: --image-size N (squares), not HxW")
        return int(module.train_main(args) or 0)
    from ..runs.config import RunConfig
    from ..runs.train import read_run_config, train_run

    ignored = [
        flag
        for dest, (flag, default) in sorted(getattr(args, "task_only_flags", {}).items())
        if getattr(args, dest, default) != default
    ]
    if ignored:
        raise UsageError(
            f"{', '.join(ignored)} {'applies' if len(ignored) == 1 else 'apply'} only with --task "
            f"{'|'.join(TASK_MODULES)}; drop {'it' if len(ignored) == 1 else 'them'} to train a "
            "classifier, or add --task"
        )
    if args.resume:
        _check_resume_flags(args)
        record = read_run_config(args.resume)
        # Other commands' run folders also hold config.json and last.ckpt; resuming one here would
        # train something else than what it was.
        if (
            "finetune" in record
            or record.get("task") != "classify"
            or not isinstance(record.get("run"), dict)
        ):
            kind = "`cnnkit finetune`" if "finetune" in record else f"task {record.get('task')!r}"
            raise UsageError(
                f"{args.resume} was not written by `cnnkit train` ({kind}); it cannot be resumed here"
            )
        config = RunConfig.from_dict(record["run"])
        out = Path(args.resume)
    else:
        config = _classify_config(args)
        out = Path(args.out or f"runs/{config.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"run folder: {out}", file=sys.stderr)
    try:
        metrics = train_run(config, out, resume=bool(args.resume), progress=not args.no_progress)
    except KeyboardInterrupt:
        from ..runs.train import LAST_CHECKPOINT

        if (out / LAST_CHECKPOINT).is_file():
            print(
                f"cnnkit: interrupted; {out / LAST_CHECKPOINT} holds the last finished epoch. "
                f"Continue with: cnnkit train --resume {out}",
                file=sys.stderr,
            )
        else:
            print("cnnkit: interrupted before training started; nothing to resume", file=sys.stderr)
        return 130
    print(
        f"test accuracy {metrics['test_accuracy']:.4f} after {metrics['epochs_run']} epochs "
        f"(best epoch {metrics['best_epoch']}, {metrics['train_seconds']:.0f} s of training); "
        f"run folder: {out}"
    )
    if "compile_seconds" in metrics:
        what = "the model" if args.compile else "the max-pool kernels"
        print(f"compiling ({what}): {metrics['compile_seconds']:.1f} s of that, in the first steps")
    return 0
