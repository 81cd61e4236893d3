"""One run-folder format and its one reader: what a run is, found out in one place.

Every task writes ``config.json`` (with its ``task``, seed, versions and machine),
``best.safetensors``, ``metrics.json`` and, where the task trains through the engine with a
run folder, ``last.ckpt``, ``history.csv`` / ``history.json``, ``curves.png`` and ``report.html``.
``read_run`` names the run's task; ``load_run`` rebuilds its model; ``require_task`` refuses a run
in one line that names the command that fits it. The shipped Fashion-MNIST model (``fashion``)
reads as a classification run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import distributed
from ..engine.callbacks import Callback, EarlyStopping, History, HistoryFile, ModelCheckpoint, ProgressBar
from ..engine.checkpoint import load_checkpoint
from ..engine.trainer import Trainer
from ..errors import DataError, UsageError
from ..io.atomic import atomic_write_text, clean_stale_temps
from .lock import LOCK_FILE as LOCK_FILE
from .lock import claim_folder
from .lock import release_folder as release_folder
from .session import thread_controller

CONFIG_FILE = "config.json"
BEST_WEIGHTS = "best.safetensors"
LAST_CHECKPOINT = "last.ckpt"
METRICS_FILE = "metrics.json"
RANK_LOGS = "logs"  # rank-N.log of the other ranks of a data-parallel run (rank 0 writes the rest)
TASKS = ("classify", "finetune", "localize", "detect", "segment")
SHIPPED = "fashion"  # the Fashion-MNIST model that ships with cnnkit
SHIPPED_WEIGHTS = "fashion_hongong_cnn.safetensors"
# The command that shows what a run of each task predicts.
PREDICT_COMMAND = {
    "classify": "cnnkit predict",
    "finetune": "cnnkit predict",
    "localize": "cnnkit detect",
    "detect": "cnnkit detect",
    "segment": "cnnkit segment",
}


@dataclass(frozen=True)
class RunInfo:
    """A run folder as read from its ``config.json``.

    Attributes:
        path: the folder (for the shipped model: where its files are installed).
        record: the parsed ``config.json``.
        task: one of TASKS.
        shipped: the shipped model, whose folder is read-only (outputs go elsewhere).
    """

    path: Path
    record: dict[str, Any]
    task: str
    shipped: bool = False

    @property
    def model_name(self) -> str:
        run = self.record.get("run")
        return (run if isinstance(run, dict) else {}).get("model") or self.record.get("model") or "?"

    @property
    def output_dir(self) -> Path:
        """Where commands write figures and reports of this run by default."""
        return Path("runs") / SHIPPED if self.shipped else self.path

    def describe(self) -> str:
        kind = f"{self.task} run"
        if self.task == "segment":
            run = self.record.get("run")
            head = (run if isinstance(run, dict) else {}).get("head") or self.record.get("head")
            kind = f"segment run ({head})" if head else kind
        return f"{self.path if not self.shipped else SHIPPED} is a {kind}"


def shipped_weights() -> Path:
    return Path(str(resources.files("cnnkit").joinpath("assets", SHIPPED_WEIGHTS)))


def _shipped_run() -> RunInfo:
    from ..data.fashion_mnist import CLASS_NAMES

    weights = shipped_weights()
    record = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    record.update(
        task="classify",
        class_names=list(CLASS_NAMES),
        input_shape=[1, 28, 28],
        num_classes=len(CLASS_NAMES),
        normalize=None,
    )
    return RunInfo(weights.parent, record, "classify", shipped=True)


def read_run(run_dir: str | os.PathLike[str]) -> RunInfo:
    """The run at ``run_dir`` (or the shipped model, ``'fashion'``) and its task.

    Raises:
        UsageError: not a run folder, an unreadable config.json, or a task this version does not
            know (the message names the version that wrote it).
    """
    if str(run_dir) == SHIPPED and not Path(run_dir).exists():
        return _shipped_run()
    path = Path(run_dir) / CONFIG_FILE
    if Path(run_dir).suffix in (".onnx", ".pt2") and Path(run_dir).is_file():
        raise UsageError(
            f"{run_dir} is an exported model, not a run folder; `cnnkit predict {run_dir} IMAGE...` "
            "runs an .onnx file of any task"
        )
    if not path.is_file():
        raise UsageError(
            f"{run_dir} is not a cnnkit run folder ({CONFIG_FILE} is missing); give a folder written "
            f"by `cnnkit train` or `cnnkit finetune`, or {SHIPPED!r} for the shipped model"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); the run folder is damaged") from None
    if not isinstance(record, dict):
        raise UsageError(f"{path} is not a run record (a JSON object); the run folder is damaged")
    task = "finetune" if isinstance(record.get("finetune"), dict) else record.get("task")
    if task is None and isinstance(record.get("run"), dict):
        task = "classify"  # classification records written before every run named its task
    if task is None:
        raise UsageError(
            f"{path} names no task: it is not a config.json written by cnnkit (the run folder is "
            "damaged, or not a run folder)"
        )
    if task not in TASKS:
        from .. import __version__

        versions = record.get("versions")
        written = versions.get("cnnkit", "an unknown version") if isinstance(versions, dict) else "?"
        raise UsageError(
            f"{run_dir} records task {task!r}, which cnnkit {__version__} does not know (written by "
            f"cnnkit {written}); use that version, or train the run again with this one"
        )
    return RunInfo(Path(run_dir), record, task)


def require_task(run: RunInfo, command: str, tasks: tuple[str, ...], what: str = "") -> None:
    """Refuse ``run`` in one line unless its task is one of ``tasks``; the line names what fits.

    Raises:
        UsageError: the run's task is not in ``tasks``.
    """
    if run.task in tasks:
        return
    spec = SHIPPED if run.shipped else str(run.path)
    fits = f"{PREDICT_COMMAND[run.task]} {spec} IMAGE..."
    if run.task not in ("classify", "finetune"):
        fits = f"`cnnkit evaluate {spec}`, `cnnkit report {spec}` or `{fits}`"
    else:
        fits = f"`{fits}`"
    names = " or ".join(
        dict.fromkeys("classification" if t in ("classify", "finetune") else t for t in tasks)
    )
    raise UsageError(
        f"{run.describe()}; `{command}` {what or f'works on {names} runs'}; for this run use {fits}"
    )


def load_run(
    run_dir: str | os.PathLike[str] | RunInfo, device: str | torch.device | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild any run's model with its best weights (eval mode), with its ``config.json`` record.

    Raises:
        UsageError: not a run folder, or one without best weights.
        WeightsError: weights that do not fit the model the record describes.
    """
    run = run_dir if isinstance(run_dir, RunInfo) else read_run(run_dir)
    where = run.path / CONFIG_FILE
    try:
        if run.task in ("classify", "finetune"):
            from .classify import load_classify_run

            return load_classify_run(run, device)
        if run.task in ("localize", "detect"):
            from .scenes import load_scene_run

            return load_scene_run(run, device)
        from .segment import load_segment_run

        return load_segment_run(run, device)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:  # a record missing its parts
        detail = f"no {exc.args[0]!r} entry" if isinstance(exc, KeyError) and exc.args else str(exc)
        raise UsageError(
            f"{where} is damaged or incomplete ({detail}); the run cannot be rebuilt from it"
        ) from None
    except UsageError as exc:
        if str(run.path) in str(exc):
            raise
        raise UsageError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------- writing a run folder
def default_run_dir(task: str, model: str) -> Path:
    prefix = "" if task == "classify" else f"{task}-"
    return Path("runs") / f"{prefix}{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def open_folder(out: Path, resume: bool) -> dict[str, Any] | None:
    """Claim ``out`` for this process (``claim_folder``) and make it ready: a new run needs it
    absent or empty; a resumed one, its ``last.ckpt``. A new folder this call made and that is
    still empty when released (settings or data failed before any file was written) is removed
    again.

    Returns:
        With ``resume``, the verified body of ``last.ckpt`` (checked before anything is rewritten,
        so a bad file fails fast and changes nothing); else None.

    Raises:
        UsageError: ``out`` is a file, another live process owns it, a non-empty ``out`` without
            ``resume``, or a ``resume`` without a checkpoint.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; give a folder path for the run")
    if resume and not (out / LAST_CHECKPOINT).is_file():
        raise UsageError(f"{out} has no {LAST_CHECKPOINT} to resume from")
    world = distributed.env_world()
    # A data-parallel run's folder belongs to its rank 0 (the other ranks write only their logs).
    owner = world is None or world.rank == 0
    if owner:
        claim_folder(out, remove_if_empty=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
    state = None
    try:
        if resume:
            clean_stale_temps(out)  # temp files of a write that a crash cut short
            state = load_checkpoint(out / LAST_CHECKPOINT)
            _check_one_run(out, state)
        elif any(p.name != LOCK_FILE for p in out.iterdir()):
            raise UsageError(
                f"run folder {out} already exists and is not empty; choose another --out or use --resume"
            )
    except BaseException:
        if owner:
            release_folder(out)
        raise
    return state


def _check_one_run(out: Path, state: dict[str, Any]) -> None:
    """``config.json`` and ``last.ckpt`` must come from one run (their seeds agree)."""
    try:
        record = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # read_run reports a missing or damaged config.json
    run = record.get("run") if isinstance(record, dict) else None
    seed = run.get("seed") if isinstance(run, dict) else None
    if seed is not None and "seed" in state and seed != state["seed"]:
        raise UsageError(
            f"{out / LAST_CHECKPOINT} was written by a run with seed {state['seed']}, but "
            f"{out / CONFIG_FILE} says seed {seed}: the files belong to different runs; train "
            "again into a new folder"
        )


def require_samples(source: str, **splits: Any) -> None:
    """Refuse, before any training, data whose train, validation or test split is empty.

    Raises:
        DataError: naming the data and the empty split.
    """
    for name, part in splits.items():
        if len(part) == 0:
            raise DataError(
                f"{source}: the {name} split is empty; add {name} data (or lower --limit-* / "
                "change the split fractions) so that every split has samples"
            )


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as JSON, atomically; only rank 0 of a data-parallel run writes."""
    if not distributed.current().main:
        return
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=float) + "\n")


def write_config(out: Path, record: dict[str, Any], on_started: Callable[[], None] | None = None) -> None:
    """The run's config.json; then ``on_started()``: the folder now holds a run (the CLI names
    it only from here, so a setting that fails earlier names no folder that was never made)."""
    write_json(out / CONFIG_FILE, record)
    if on_started is not None:
        on_started()


def versions() -> dict[str, str]:
    import torchvision

    from .. import __version__

    return {"cnnkit": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}


def run_record(task: str, run: dict[str, Any], device: torch.device, **fields: Any) -> dict[str, Any]:
    """The ``config.json`` record of a run: its ``task`` and resolved config (``run``) first, the
    task's own ``fields`` next, then the ``versions`` and ``machine`` it was trained with."""
    record = {"task": task, "run": run, **fields, "versions": versions(), "machine": machine_info(device)}
    world = distributed.current()
    if world.active:  # a data-parallel run: its global batch is processes × batch_size
        record["distributed"] = {"processes": world.size, "backend": distributed.backend_for(device)}
    return record


def machine_info(device: torch.device) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def run_callbacks(
    out: Path, monitor: str, patience: int | None, progress: bool, mode: str = "auto"
) -> list[Callback]:
    """What every run folder's training has: early stopping with the best weights restored
    (``patience`` None: never stop), ``best.safetensors`` on improvement, ``history.json`` after
    every epoch (by the main process), and progress if asked (the other ranks of a data-parallel
    run write theirs to ``logs/rank-N.log`` always)."""
    callbacks: list[Callback] = [
        EarlyStopping(monitor, patience=patience, restore_best_weights=True, mode=mode),
        ModelCheckpoint(out / BEST_WEIGHTS, monitor=monitor, save_best_only=True, mode=mode),
    ]
    if distributed.current().main:
        callbacks.append(HistoryFile(out))  # history.json after every epoch: `cnnkit studio` draws it live
    return callbacks + progress_callbacks(out, progress)


def progress_callbacks(out: Path, progress: bool) -> list[Callback]:
    """A progress display if asked; the other ranks of a data-parallel run write theirs to
    ``logs/rank-N.log`` always."""
    world = distributed.current()
    if not world.main:
        log = distributed.rank_log(out / RANK_LOGS / f"rank-{world.rank}.log", world)
        return [ProgressBar(stream=log, bar=False)]
    return [ProgressBar()] if progress else []


def fit_run(
    trainer: Trainer,
    out: Path,
    resume_state: dict[str, Any] | None,
    train: Any,
    val: Any,
    *,
    epochs: int,
    batch_size: int,
    num_samples: int,
    validation_freq: int = 1,
) -> History:
    """``trainer.fit`` of a run folder's training; a resumed run (``resume_state``, its verified
    ``last.ckpt``) goes on from where it stopped, its schedule sized for ``num_samples`` training
    samples an epoch. Every task follows the free cores between steps (``session.thread_controller``)
    unless the run set its own controller or the count is fixed."""
    if trainer.threads is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
        trainer.threads = thread_controller(trainer.device, pick_threads=False, deterministic=deterministic)
    if resume_state is not None:
        steps = epochs * math.ceil(num_samples / (batch_size * trainer.world.size))  # global batches
        trainer.load_state(resume_state, total_steps=steps, source=str(out / LAST_CHECKPOINT))
    return trainer.fit(
        train, val, epochs=epochs, batch_size=batch_size, verbose=0, validation_freq=validation_freq
    )


def best_epoch(callbacks: list[Callback]) -> int | None:
    """The best epoch (from 1) that early stopping kept, if any."""
    early = next(cb for cb in callbacks if isinstance(cb, EarlyStopping))
    return None if early.best_epoch is None else early.best_epoch + 1


def save_history(out: Path, history: History, best: int | None, title: str) -> None:
    """``history.csv``, ``history.json`` and ``curves.png`` (the best epoch marked; rank 0 only)."""
    if not distributed.current().main:
        return
    from ..viz.curves import plot_history

    history.save(out)
    plot_history(history.epochs, best, out / "curves.png", title=title)


def write_report_safely(out: Path, model: nn.Module, test: Any = None, probs: Any = None) -> None:
    """``report.html`` (``probs``: the run's own test probabilities, see ``write_report``); a
    failure only warns: the run is complete on disk without it (rank 0 only)."""
    if not distributed.current().main:
        return
    try:
        from ..viz.report import write_report

        write_report(out, model, test, probs=probs)
    except Exception as exc:
        print(
            f"cnnkit: warning: no report.html: {type(exc).__name__}: {exc} "
            f"(retry with `cnnkit report {out}`)",
            file=sys.stderr,
        )
