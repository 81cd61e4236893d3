"""`cnnkit finetune --model M --weights W --data DIR`: transfer learning in two phases.

As in the course (Géron ch. 14, pretrained Xception on flowers): first the pretrained base is
frozen (batch norm included) and only a new head learns for --head-epochs; then every layer is
unfrozen and training goes on at --lr × --lr-factor (or --group-lr rates) for --full-epochs.

--data is an image folder, read as `cnnkit train` reads it: train/, val/, test/ sub-folders of
class folders (a missing val/ or test/ is a seeded share of train/), or one sub-folder per class
(split into train / validation / test with --seed); the class balance is printed first. Or
'fashion-mnist', or an MNIST-format folder.
--weights is a cnnkit run folder, a .safetensors / .pth state dict, or a torchvision weights
name such as IMAGENET1K_V1. The run folder it writes has the layout of `cnnkit train`'s and
works with `cnnkit predict RUN`; see docs/transfer.md.

`--nproc N` fine-tunes data-parallel in N local processes, launched as `cnnkit train --nproc`
launches them (both phases; the global batch is N × --batch-size; docs/distributed.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from .train import (
    add_engine_options,
    add_image_folder_options,
    add_launch_options,
    add_model_option,
    add_settings_options,
    model_kwargs,
)

if TYPE_CHECKING:
    from ..runs.finetune import FinetuneConfig

HELP = "transfer learning: train a new head on a frozen base, then fine-tune all layers"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="run folder, weights file or torchvision name (required)")
    p.add_argument("--data", help="image folder (train/ val/ test/, or one sub-folder per class) (required)")
    add_settings_options(p, "fine-tuning")
    p.add_argument("--model", help="registered model name (default: the --weights run's)")
    p.add_argument("--out", help="run folder (default runs/finetune-<model>-<time>)")
    p.add_argument("--head-epochs", type=int, help="phase 1, base frozen (default 5)")
    p.add_argument("--full-epochs", type=int, help="phase 2, all layers (default 10)")
    p.add_argument("--lr", type=float, help="phase-1 learning rate (default 1e-3)")
    p.add_argument("--lr-factor", type=float, help="phase-2 rate = lr × this (default 0.1)")
    p.add_argument(
        "--group-lr",
        action="append",
        metavar="PREFIX=LR",
        help="phase-2 rate for the modules under PREFIX, e.g. features=1e-5 (repeatable)",
    )
    p.add_argument(
        "--head",
        action="append",
        metavar="MODULE",
        help="module trained in phase 1 (repeatable; default: the new classifier)",
    )
    p.add_argument("--optimizer", help="adam (default), adamw, sgd or rmsprop")
    p.add_argument("--batch-size", type=int, help="batch size (default 32)")
    p.add_argument("--patience", type=int, help="early-stopping patience per phase (default 2)")
    p.add_argument(
        "--keep-bn-eval", action="store_true", help="keep the base's batch norm in eval mode in phase 2 too"
    )
    p.add_argument("--seed", type=int, help="random seed (default 42)")
    p.add_argument("--val-fraction", type=float, help="validation share (0.15)")
    p.add_argument("--test-fraction", type=float, help="test share (0.1)")
    p.add_argument("--image-size", type=int, help="square input side (default: the model's)")
    add_image_folder_options(p, resize_default="resize")
    p.add_argument(
        "--normalize",
        choices=["auto", "imagenet", "unit"],
        help="input statistics: auto (default) = ImageNet for torchvision weights, else the source run's",
    )
    p.add_argument("--small-input", action="store_true", help="the model's 28x28 variant")
    add_model_option(p)
    p.add_argument("--limit-train", type=int, help="use only N training images")
    p.add_argument("--limit-test", type=int, help="evaluate on only N test images")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        help="auto (default): bf16 autocast + channels-last where the CPU/GPU has native bf16; "
        "fp32: exact FP32",
    )
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms only")
    add_engine_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    add_launch_options(p)


def parse_group_lrs(items: list[str]) -> dict[str, float]:
    """``["features=1e-5", "head=1e-3"]`` -> ``{"features": 1e-5, "head": 1e-3}``.

    Raises:
        UsageError: an item that is not PREFIX=NUMBER.
    """
    groups: dict[str, float] = {}
    for item in items:
        prefix, sep, value = item.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = None
        if not sep or not prefix or rate is None:
            raise UsageError(f"--group-lr must look like PREFIX=LR (features=1e-5), got {item!r}")
        groups[prefix] = rate
    return groups


def _default_out(config: FinetuneConfig) -> str:
    label = config.model or Path(config.weights).name
    return f"runs/finetune-{label}-{time.strftime('%Y%m%d-%H%M%S')}"


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The FinetuneConfig of a command line: ``--config``'s settings, then the flags given.

    Raises:
        UsageError: no --weights or --data (on the command line or in --config), or settings
            that cannot be used (checked here, once, before any worker starts).
    """
    import dataclasses

    from ..runs.finetune import FinetuneConfig
    from ..runs.folder import SHIPPED, read_run, require_task

    settings = FinetuneConfig.read(args.config) if args.config else {}
    for f in dataclasses.fields(FinetuneConfig):
        value = getattr(args, f.name, None)
        if value is not None and value is not False:  # given (store_true flags: when set)
            settings[f.name] = value
    if args.group_lr:
        settings["group_lrs"] = parse_group_lrs(args.group_lr)
    options = model_kwargs(args)
    if options:
        settings["model_kwargs"] = {**settings.get("model_kwargs", {}), **options}
    missing = [f"--{key}" for key in ("weights", "data") if not settings.get(key)]
    if missing:
        raise UsageError(
            f"cnnkit finetune needs {' and '.join(missing)} (or --config FILE that names them, "
            "or --resume RUN_DIR)"
        )
    weights = settings["weights"]
    if Path(weights).is_dir() or weights == SHIPPED:
        require_task(
            read_run(weights),
            "cnnkit finetune --weights",
            ("classify", "finetune"),
            "starts from a classifier",
        )
    return FinetuneConfig.from_dict(settings)


def run(args: argparse.Namespace) -> int:
    from ..engine import distributed
    from .train import fix_threads, launch_workers, require_shared_out

    if args.threads is not None:
        fix_threads(args.threads)
    worker = distributed.env_world()
    launching = worker is None and args.nproc is not None and args.nproc != 1
    if not launching:
        require_shared_out(worker, args)
    if args.resume:
        return launch_workers(args, None) if launching else _resume(args)
    config = config_from_args(args)
    if launching:
        return launch_workers(args, None if args.out else _default_out(config))
    from ..engine.device import pick_device
    from ..engine.perf import pick_num_threads, set_threads

    if worker is None and args.threads is None and pick_device(config.device).type == "cpu":
        set_threads(pick_num_threads())  # busy cores stall OpenMP threads (docs/performance.md)
    out = Path(args.out or _default_out(config))
    return _finetune(config, out, args, resume=False)


def _resume(args: argparse.Namespace) -> int:
    """``--resume RUN_DIR``: the run's own settings, from its config.json."""
    from ..runs.finetune import FinetuneConfig
    from ..runs.folder import read_run, require_task

    if args.weights or args.data or args.config:
        raise UsageError(
            f"--resume continues {args.resume} with the settings saved in it; drop --weights/--data/--config"
        )
    run = read_run(args.resume)
    require_task(run, "cnnkit finetune --resume", ("finetune",), "continues fine-tuning runs")
    saved = {"precision": "fp32", **run.record["finetune"]}  # runs from before --precision: FP32
    return _finetune(FinetuneConfig(**saved).validate(), run.path, args, resume=True)


def _finetune(config, out: Path, args: argparse.Namespace, resume: bool) -> int:
    from ..engine import distributed
    from ..runs.finetune import finetune_run
    from .train import folder_notice, report_interrupted, restarted

    worker = distributed.env_world()
    finished = False

    try:
        metrics = finetune_run(
            config,
            out,
            progress=not args.no_progress,
            report=lambda s: print(s, file=sys.stderr),
            resume=resume or restarted(worker, out),  # a restarted group goes on from last.ckpt
            on_started=folder_notice(worker, out),
        )
        finished = True
    except KeyboardInterrupt:
        if report_interrupted(out, "cnnkit finetune"):
            return 130
        raise
    finally:
        distributed.shutdown(wait=finished)  # the ranks leave together after a finished run
    if worker is not None and worker.rank != 0:
        return 0
    print(
        f"test accuracy {metrics['test_accuracy']:.4f} after {metrics['head_epochs_run']} head + "
        f"{metrics['full_epochs_run']} full epochs (best epoch {metrics['best_epoch']}, "
        f"{metrics['best_phase']} phase; {metrics['train_seconds']:.0f} s of training); "
        f"run folder: {out}"
    )
    return 0
