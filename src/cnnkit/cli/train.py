"""`cnnkit train [TASK] ...`: train a model and write a run folder.

TASK is classify (the default), localize, detect or segment; each has its own options
(`cnnkit train TASK --help`). The older spelling `cnnkit train --task TASK ...` works too.
Without --out the run goes to runs/<model>-<date-time>. `cnnkit train --resume RUN_DIR`
continues an interrupted run of any task exactly where its last finished epoch left it.

`--nproc N` trains data-parallel in N local processes (torch.distributed's elastic launcher,
as `torchrun`): the global batch is N × --batch-size. Across machines, start
`torchrun --nnodes M --nproc-per-node N ... -m cnnkit train ... --out SHARED_DIR` on each
(docs/distributed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError
from . import train_classify, train_scenes, train_segment

# task -> its options module: add_arguments(parser, task), config_from_args(args, task, base),
# summary(metrics, args, out) -> the closing lines
TASKS = {
    "classify": train_classify,
    "localize": train_scenes,
    "detect": train_scenes,
    "segment": train_segment,
}
TASK_HELP = {
    "classify": "one class per image (the course's CNNs; Fashion-MNIST, IDX or image folders)",
    "localize": "a class and one box per image (FashionScenes)",
    "detect": "a YOLO-style detector (FashionScenes, COCO or YOLO data)",
    "segment": "FCN / U-Net per-pixel classes, or Mask R-CNN instances (FashionScenes, mask folders)",
}
# Given with --resume, these are not run settings (the run folder holds those).
NOT_SETTINGS = {
    *("resume", "no_progress", "debug", "func", "command", "task", "task_parser", "device"),
    *("argv", "nproc", "max_restarts", "threads"),
}


def task_first(argv: list[str]) -> list[str]:
    """``train --task X ...`` (the older spelling) as ``train X ...``; ``train`` without a task
    trains a classifier (``train classify ...``), as it always has."""
    commands = [i for i, token in enumerate(argv) if not token.startswith("-")]
    if not commands or argv[commands[0]] != "train":  # the command is the first word
        return argv
    at = commands[0]
    rest = argv[at + 1 :]
    task = None
    for i, token in enumerate(rest):
        if token == "--task" and i + 1 < len(rest):
            task = rest[i + 1]
            rest = rest[:i] + rest[i + 2 :]
            break
        if token.startswith("--task="):
            task = token.partition("=")[2]
            rest = rest[:i] + rest[i + 1 :]
            break
    if task is None:
        if rest and (rest[0] in TASKS or rest[0] in ("-h", "--help")):
            return argv
        task = _resumed_task(rest) or "classify"
    return [*argv[: at + 1], task, *rest]


def _resumed_task(rest: list[str]) -> str | None:
    """``train --resume RUN`` without a task: the task RUN recorded (its options then parse)."""
    if "--resume" not in rest[:-1]:
        return None
    from ..runs.folder import read_run

    try:
        task = read_run(rest[rest.index("--resume") + 1]).task
    except UsageError:
        return None  # the run folder's own error comes when the command runs
    return task if task in TASKS else None


class _Given(argparse.Action):
    """Store the value and remember that the flag was given: a default must not override --config."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def common_options() -> argparse.ArgumentParser:
    """The options every task's training takes (the engine's and the run folder's)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model", help="registered model (or backbone) name")
    p.add_argument("--data", action=_Given, help="the data to train on (see the task's help)")
    p.add_argument("--epochs", type=int, help="maximum epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, help="samples per step")
    p.add_argument("--lr", type=float, help="learning rate (peak rate for scheduled tasks)")
    p.add_argument("--optimizer", help="adam, adamw, sgd or rmsprop")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs on the task's monitor")
    p.add_argument("--seed", type=int, default=42, action=_Given, help="random seed (default 42)")
    p.add_argument("--out", help="run folder (default runs/<model>-<time>)")
    p.add_argument("--small-input", action="store_true", help="the model's 28x28 variant (zoo models)")
    add_model_option(p)
    p.add_argument("--limit-train", type=int, help="use only N training samples (quick tries, tests)")
    p.add_argument("--limit-test", type=int, help="evaluate on only N test samples")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms only")
    add_engine_options(p)
    add_settings_options(p, "training")
    add_launch_options(p, sync_bn_default=None)  # None: --config's setting unless given
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors"
    )
    return p


MODEL_OPTION_HELP = (
    "a model (or backbone) builder option, VALUE in JSON (e.g. depth=2, widths=[32,64]); repeatable"
)


def add_settings_options(p: argparse.ArgumentParser, kind: str) -> None:
    """--config FILE and --resume RUN_DIR, said alike by ``train`` and ``finetune``."""
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"JSON file of settings, or a {kind} run's config.json to repeat it (flags override it)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help=f"continue an interrupted {kind} run")


def add_model_option(p: argparse.ArgumentParser) -> None:
    """--model-option KEY=VALUE (train and finetune); :func:`model_kwargs` reads them."""
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE", help=MODEL_OPTION_HELP)


def add_image_folder_options(p: argparse.ArgumentParser, resize_default: str) -> None:
    """--resize and --on-error (train and finetune): how an image folder's files become inputs."""
    from ..data.preprocess import RESIZE_MODES

    p.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        help="image folders: fit each image to the input by stretching it (resize), cropping its "
        f"centre (crop) or padding it (pad) (default {resize_default})",
    )
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        help="image folders: a bad file stops the run before training (raise, the default) or is "
        "left out and listed (skip)",
    )


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The builder options of ``--model-option`` flags and ``--small-input``."""
    kwargs = parse_model_options(args.model_option)
    if args.small_input:
        kwargs["small_input"] = True
    return kwargs


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """--threads, --max-grad-norm, --on-divergence, --ema and --validation-freq: the engine's
    settings (train and finetune)."""
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads, fixed for the whole run (default: the cores other processes leave "
        "free, re-checked as the run goes)",
    )
    p.add_argument(
        "--max-grad-norm", type=float, help="clip the gradient norm to this and stop on a non-finite one"
    )
    p.add_argument(
        "--on-divergence",
        choices=("stop", "warn", "off"),
        help="when the loss grows a thousandfold: stop (the default), warn, or off",
    )
    p.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="validate and keep a moving average of the weights with this decay, e.g. 0.999 "
        "(about the last 1,000 steps)",
    )
    p.add_argument(
        "--validation-freq",
        type=int,
        metavar="N",
        help="validate after every N epochs and after the last (default 1); patience counts validations",
    )


def add_launch_options(p: argparse.ArgumentParser, sync_bn_default: bool | None = False) -> None:
    """--nproc, --max-restarts and --sync-bn: data-parallel training (train and finetune)."""
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train data-parallel in N local processes; the global batch is N x --batch-size",
    )
    p.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        metavar="K",
        help="with --nproc: restart the group up to K times after a worker fails; it resumes "
        "from the last checkpoint (default 0)",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        default=sync_bn_default,
        help="data-parallel runs: BatchNorm with the global batch's statistics (SyncBatchNorm)",
    )


HELP = "train a model and write a run folder (classify, localize, detect or segment)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    tasks = p.add_subparsers(dest="task", metavar="TASK", parser_class=type(p))
    common = common_options()
    for name, module in TASKS.items():
        tp = tasks.add_parser(name, parents=[common], help=TASK_HELP[name], description=TASK_HELP[name])
        module.add_arguments(tp, name)
        tp.set_defaults(func=run, task_parser=tp)


def parse_model_options(items: list[str] | None) -> dict[str, Any]:
    """``--model-option KEY=VALUE`` flags as builder keyword arguments (values read as JSON)."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--model-option takes KEY=VALUE (e.g. depth=2), got {item!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text  # a bare word such as a name
    return options


def common_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The common options given on the command line (None where not given), as config keys."""
    given = getattr(args, "given", set())
    kwargs = model_kwargs(args)
    return {
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
        "ema": args.ema,
        "validation_freq": args.validation_freq,
        "sync_bn": args.sync_bn,
        "on_divergence": args.on_divergence,
        "model_kwargs": kwargs or None,
    }


def apply_flags(base: dict[str, Any], args: argparse.Namespace, own: dict[str, Any]) -> dict[str, Any]:
    """Put the settings given on the command line over ``base`` (a --config's), in place.

    Args:
        base: the config as a dict.
        args: the parsed command line (its common options, see ``common_settings``).
        own: the task's own options as config keys (None where not given).

    Returns:
        The overrides, common and the task's, None where not given; ``--model-option`` values are
        merged into ``base["model_kwargs"]``.
    """
    settings = common_settings(args)
    kwargs = settings.pop("model_kwargs")
    overrides = {**settings, **own}
    base.update({k: v for k, v in overrides.items() if v is not None})
    if kwargs:
        base["model_kwargs"] = {**(base.get("model_kwargs") or {}), **kwargs}
    return overrides


def folder_notice(worker: Any, out: Path) -> Callable[[], None]:
    """The runners' ``on_started``: rank 0 names the folder once it holds a run (a setting that
    fails earlier leaves no folder to name)."""

    def notice() -> None:
        if worker is None or worker.rank == 0:
            print(f"run folder: {out}", file=sys.stderr, flush=True)

    return notice


def report_interrupted(out: Path, command: str) -> bool:
    """After Ctrl-C: if ``out`` holds a ``last.ckpt``, say so and how to go on (``command
    --resume out``) on stderr; returns whether it did."""
    from ..runs.folder import LAST_CHECKPOINT

    if not (out / LAST_CHECKPOINT).is_file():
        return False
    print(
        f"cnnkit: interrupted; {out / LAST_CHECKPOINT} holds the last finished epoch. "
        f"Continue with: {command} --resume {out}",
        file=sys.stderr,
    )
    return True


def _given_settings(args: argparse.Namespace) -> list[str]:
    """The run settings given on the command line (compared with the task parser's defaults), as
    spelt there: ``--no-whiten`` for an on/off flag given as off."""
    parser: argparse.ArgumentParser = args.task_parser
    return [
        f"--{'no-' if value is False and parser.get_default(dest) is None else ''}{dest.replace('_', '-')}"
        for dest, value in vars(args).items()
        if dest not in NOT_SETTINGS and dest != "given" and value != parser.get_default(dest)
    ]


def _resume_config(args: argparse.Namespace) -> tuple[Any, Path]:
    from ..runs.config import config_class
    from ..runs.folder import read_run, require_task

    given = _given_settings(args)
    if given:
        raise UsageError(
            f"--resume continues {args.resume} with the settings saved in it; drop {', '.join(given)}"
        )
    run = read_run(args.resume)
    if run.task == "finetune":
        raise UsageError(
            f"{run.describe()}; `cnnkit train --resume` continues runs of `cnnkit train`; "
            f"continue this one with `cnnkit finetune --resume {run.path}`"
        )
    if args.task != run.task:
        require_task(run, f"cnnkit train {args.task} --resume", (args.task,))
    settings = run.record.get("run")
    if not isinstance(settings, dict):
        written = (run.record.get("versions") or {}).get("cnnkit")
        raise UsageError(
            f"{run.describe()} without resumable settings (written by "
            f"{f'cnnkit {written}' if written else 'an older cnnkit'}); train it again with this version"
        )
    try:
        config = config_class(run.task).from_dict({**settings, "task": run.task})
    except UsageError as exc:
        raise UsageError(f"{run.path / 'config.json'}: {exc}") from None
    return config, run.path


def run(args: argparse.Namespace) -> int:
    from ..engine import distributed
    from ..runs.folder import default_run_dir
    from ..runs.train import train_run

    if args.threads is not None:
        fix_threads(args.threads)
    worker = distributed.env_world()
    if worker is None and args.nproc is not None and args.nproc != 1:
        return _launch(args)
    if hasattr(TASKS[args.task], "legacy_main") and not args.resume:
        return TASKS[args.task].legacy_main(args)
    require_shared_out(worker, args)
    if args.resume:
        config, out = _resume_config(args)
        module = TASKS[config.task]
    else:
        module = TASKS[args.task]
        config = module.config_from_args(args, args.task)
        out = Path(args.out or default_run_dir(config.task, config.model))
    resume = bool(args.resume) or restarted(worker, out)
    main = worker is None or worker.rank == 0
    finished = False

    def announce(metrics: dict[str, Any]) -> None:
        # As soon as the test scores are in (a classifier's curves and report.html come after).
        if main:
            for line in module.summary(metrics, config, out):
                print(line, flush=True)

    try:
        train_run(
            config,
            out,
            resume=resume,
            progress=not args.no_progress,
            on_scored=announce,
            on_started=folder_notice(worker, out),
            report=lambda text: print(text, file=sys.stderr),
        )
        finished = True
    except KeyboardInterrupt:
        if not report_interrupted(out, "cnnkit train"):
            print("cnnkit: interrupted before training started; nothing to resume", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown(wait=finished)  # the ranks leave together after a finished run
    return 0


def require_shared_out(worker: Any, args: argparse.Namespace) -> None:
    """A worker under torchrun needs ``--out`` (or ``--resume``): one run folder for all ranks."""
    if worker is not None and not (args.out or args.resume):
        raise UsageError(
            "under torchrun every process must write to the same run folder: give --out DIR "
            "(on a filesystem all machines share)"
        )


def restarted(worker: Any, out: Path) -> bool:
    """A worker the elastic launcher restarted resumes the run folder's last checkpoint."""
    from ..runs.folder import LAST_CHECKPOINT

    if worker is None or worker.restart == 0 or not (out / LAST_CHECKPOINT).is_file():
        return False
    if worker.rank == 0:
        print(f"cnnkit: restart {worker.restart}: resuming from {out / LAST_CHECKPOINT}", file=sys.stderr)
    return True


def fix_threads(n: int) -> None:
    """``--threads N``: N intra-op threads for the whole run (and each worker of ``--nproc``)."""
    import torch

    if n < 1:
        raise UsageError(f"--threads must be >= 1, got {n}")
    os.environ["OMP_NUM_THREADS"] = str(n)  # the user's choice: never picked nor adapted
    os.environ.pop("CNNKIT_AUTO_THREADS", None)
    torch.set_num_threads(n)


def _launch(args: argparse.Namespace) -> int:
    """``--nproc N``: the same command in N workers under torch's elastic launcher."""
    from ..runs.folder import default_run_dir

    check_launch_flags(args)
    out = None
    if not args.resume and not args.out:
        config = TASKS[args.task].config_from_args(args, args.task)  # bad settings fail here, once
        out = str(default_run_dir(config.task, config.model))
    return launch_workers(args, out)


def check_launch_flags(args: argparse.Namespace) -> None:
    if args.nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {args.nproc}")
    if args.max_restarts < 0:
        raise UsageError(f"--max-restarts must be >= 0, got {args.max_restarts}")


def launch_workers(args: argparse.Namespace, out: str | None) -> int:
    """This command line (``args.argv``) in ``--nproc`` workers under torch's elastic launcher,
    with ``--out out`` added when given (every worker must write the same run folder)."""
    from ..engine import distributed
    from ..engine.perf import pick_num_threads

    check_launch_flags(args)
    argv = _without_launch_flags(args.argv) + (["--out", out] if out else [])
    threads = None
    if "OMP_NUM_THREADS" not in os.environ:  # workers × threads never exceed the free cores
        threads = max(1, pick_num_threads() // args.nproc)
    distributed.launch(argv, args.nproc, max_restarts=args.max_restarts, threads=threads)
    return 0


def _without_launch_flags(argv: list[str]) -> list[str]:
    """The command line without ``--nproc`` and ``--max-restarts`` (the launcher's, not the workers')."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.partition("=")[0]
        if name in ("--nproc", "--max-restarts"):
            skip = "=" not in token
            continue
        out.append(token)
    return out
