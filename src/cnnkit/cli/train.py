"""`cnnkit train --model M --data fashion-mnist`: train and write a run folder.

Without --out the run goes to runs/<model>-<date-time>. `--resume RUN_DIR` continues an
interrupted run exactly where its last finished epoch left it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from ..errors import UsageError

# --task -> module under cnnkit.tasks with add_arguments(parser) and train_main(args)
TASK_MODULES = {
    "localize": "localization.cli",
    "detect": "detection.cli",
    "segment": "segmentation.cli",
}
PRESETS = ("course", "fast")


def _task_module(task: str):
    try:
        return importlib.import_module(f"cnnkit.tasks.{TASK_MODULES[task]}")
    except ModuleNotFoundError:
        return None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model and write a run folder", description=__doc__)
    p.add_argument("--task", default="classify", choices=["classify", *TASK_MODULES], help="what to learn")
    p.add_argument("--model", default=None, help="registered model name (default hongong_cnn)")
    p.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' or a folder of MNIST-format files")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 20; early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, help="batch size (default 32, the course's)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3, Adam's)")
    p.add_argument("--optimizer", help="adam (default), adamw, sgd or rmsprop")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 2)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--out", help="run folder (default runs/<model>-<time>)")
    p.add_argument("--small-input", action="store_true", help="the model's 28x28 variant (zoo models)")
    p.add_argument("--limit-train", type=int, help="use only N training images (quick tries, tests)")
    p.add_argument("--limit-test", type=int, help="evaluate on only N test images")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.add_argument("--preset", choices=PRESETS, default="course", help="training recipe (default course)")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms only")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--config", help="JSON file with run settings (flags override it)")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    for task in TASK_MODULES:
        module = _task_module(task)
        if module is not None:
            module.add_arguments(p)
    p.set_defaults(func=run)


def _classify_config(args: argparse.Namespace):
    from ..train.config import RunConfig

    base = RunConfig.load(args.config).to_dict() if args.config else {}
    overrides = {
        "model": args.model, "data": args.data, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "optimizer": args.optimizer, "patience": args.patience, "seed": args.seed,
        "limit_train": args.limit_train, "limit_test": args.limit_test, "device": args.device,
        "deterministic": args.deterministic or None, "preset": args.preset,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    base.setdefault("model", "hongong_cnn")
    if args.small_input:
        base.setdefault("model_kwargs", {})["small_input"] = True
    if args.preset == "fast":
        from ..train.presets import apply_preset

        base = apply_preset("fast", base, explicit={k for k, v in overrides.items() if v is not None})
    return RunConfig.from_dict(base)


def run(args: argparse.Namespace) -> int:
    if args.task != "classify":
        module = _task_module(args.task)
        if module is None:
            raise UsageError(f"--task {args.task} is not available in this installation")
        return int(module.train_main(args) or 0)
    from ..train.config import RunConfig
    from ..train.run import read_run_config, train_run

    if args.resume:
        record = read_run_config(args.resume)
        config = RunConfig.from_dict(record["run"])
        out = Path(args.resume)
    else:
        config = _classify_config(args)
        from ..models import model_entry

        model_entry(config.model)  # fail fast, with close matches
        out = Path(args.out or f"runs/{config.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"run folder: {out}", file=sys.stderr)
    try:
        metrics = train_run(config, out, resume=bool(args.resume), progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"cnnkit: interrupted; the last finished epoch is saved. Continue with: "
              f"cnnkit train --resume {out}", file=sys.stderr)
        return 130
    print(f"test accuracy {metrics['test_accuracy']:.4f} after {metrics['epochs_run']} epochs "
          f"(best epoch {metrics['best_epoch']}, {metrics['train_seconds']:.0f} s of training); run folder: {out}")
    return 0
