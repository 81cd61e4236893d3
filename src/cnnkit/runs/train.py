"""Run folders: train a registered model on a dataset and keep everything needed to look back.

A run folder holds ``config.json`` (resolved config, seed, versions, machine), ``best.safetensors``,
``last.ckpt`` (exact resume), ``history.csv`` / ``history.json``, ``curves.png``, ``metrics.json``
and ``report.html`` (the HTML report of :mod:`cnnkit.viz.report`).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.arrays import ArrayDataset
from ..engine.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
from ..engine.checkpoint import load_checkpoint
from ..engine.device import pick_device
from ..engine.perf import pick_num_threads, set_threads
from ..engine.trainer import seed_everything
from ..errors import UsageError
from ..io.atomic import atomic_write_text, clean_stale_temps
from ..io.weights import load_state_dict_file, load_strict
from ..models import create_model, model_entry
from ..tasks.classify.presets import trainer_extras
from ..tasks.classify.task import ClassifyTrainer
from .config import RunConfig
from .folder import BEST_WEIGHTS, CONFIG_FILE, LAST_CHECKPOINT, SHIPPED_WEIGHTS, RunInfo, load_run, read_run


def load_dataset(
    spec: str, limit_train: int | None = None, limit_test: int | None = None, seed: int = 0
) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) for a data spec: ``fashion-mnist`` or a folder of MNIST-format IDX files."""
    from ..data.fashion_mnist import load_fashion_mnist

    if spec in ("fashion-mnist", "fashion_mnist", "fashion"):
        train, test = load_fashion_mnist()
    elif Path(spec).is_dir():
        train, test = load_fashion_mnist(spec)
        train.name, test.name = f"{spec}/train", f"{spec}/test"
    else:
        raise UsageError(
            f"--data must be 'fashion-mnist' or a folder of MNIST-format IDX files, got {spec!r}"
        )
    if limit_train:
        train = train.take(limit_train, seed=seed)
    if limit_test:
        test = test.take(limit_test, seed=0)  # fixed, so `cnnkit evaluate` sees the same images
    return train, test


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


def versions() -> dict[str, str]:
    import torchvision

    from .. import __version__

    return {"cnnkit": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}


def build_model(config: RunConfig, num_classes: int, in_chans: int) -> nn.Module:
    return create_model(config.model, num_classes=num_classes, in_chans=in_chans, **config.model_kwargs)


def make_trainer(config: RunConfig, model: nn.Module, out: Path, progress: bool = True) -> ClassifyTrainer:
    callbacks = [
        EarlyStopping(config.monitor, patience=config.patience, restore_best_weights=True),
        ModelCheckpoint(out / BEST_WEIGHTS, monitor=config.monitor, save_best_only=True),
    ]
    if progress:
        callbacks.append(ProgressBar())
    return ClassifyTrainer(
        model,
        optimizer=config.optimizer,
        lr=config.lr,
        weight_decay=config.weight_decay,
        label_smoothing=config.label_smoothing,
        callbacks=callbacks,
        device=config.device,
        seed=config.seed,
        amp=config.amp,
        channels_last=config.channels_last,
        checkpoint_path=out / LAST_CHECKPOINT,
        max_grad_norm=config.max_grad_norm,
        compile=config.compile,
        **trainer_extras(config.preset, config.lr, config.max_shift),  # augmentation, LR schedule, TTA
    )


def train_run(
    config: RunConfig, out: str | os.PathLike[str], resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train as ``config`` says and fill the run folder ``out``; returns the test metrics.

    With ``resume``, ``out`` must be an earlier run folder: training continues from its
    ``last.ckpt`` (model, optimizer moments, early-stopping state, RNGs) and ends bit-identical
    to an uninterrupted run on the same machine.

    Raises:
        UsageError: a non-empty ``out`` without ``resume``, or a ``resume`` without a checkpoint.
    """
    config.validate()
    out = Path(out)
    if resume:
        if not (out / LAST_CHECKPOINT).is_file():
            raise UsageError(f"{out} has no {LAST_CHECKPOINT} to resume from")
        clean_stale_temps(out)  # temp files of a write that a crash cut short
        # Verified before anything else is loaded or rewritten: a bad file fails fast and changes nothing.
        resume_state = load_checkpoint(out / LAST_CHECKPOINT)
    elif out.exists() and any(out.iterdir()):
        raise UsageError(
            f"run folder {out} already exists and is not empty; choose another --out or use --resume"
        )
    out.mkdir(parents=True, exist_ok=True)
    model_entry(config.model)  # unknown names fail before the data is loaded
    seed_everything(config.seed, config.deterministic)
    train_all, test = load_dataset(config.data, config.limit_train, config.limit_test, config.seed)
    train, val = train_all.split(config.val_fraction, seed=config.seed, stratify=config.stratify)
    device = pick_device(config.device)
    if config.preset == "fast" and device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Busy cores stall OpenMP threads (docs/performance.md); an explicit OMP_NUM_THREADS is
        # the user's choice and wins, as in the other tasks.
        set_threads(pick_num_threads())
    if resume and "num_threads" in resume_state:  # bit-identical only with the run's own thread count
        set_threads(int(resume_state["num_threads"]))
    model = build_model(config, train_all.num_classes, train_all.input_shape[0])
    trainer = make_trainer(config, model, out, progress)
    record = {
        "run": config.to_dict(),
        "task": "classify",
        "class_names": train_all.class_names,
        "input_shape": list(train_all.input_shape),
        "num_classes": train_all.num_classes,
        "normalize": None,
        "data_sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "versions": versions(),
        "machine": machine_info(device),
    }
    atomic_write_text(out / CONFIG_FILE, json.dumps(record, indent=2, ensure_ascii=False))
    if resume:
        steps = config.epochs * -(-len(train) // config.batch_size)
        trainer.load_state(resume_state, total_steps=steps, source=str(out / LAST_CHECKPOINT))
    start = time.perf_counter()
    history = trainer.fit(train, val, epochs=config.epochs, batch_size=config.batch_size)
    wall = time.perf_counter() - start
    early = next(cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping))
    history.save(out)
    best_epoch = None if early.best_epoch is None else early.best_epoch + 1
    from ..viz.curves import plot_history

    plot_history(history.epochs, best_epoch, out / "curves.png", title=f"{config.model} on {config.data}")
    report = trainer.evaluate(test)
    metrics = {
        "test_accuracy": report["accuracy"],
        "test_loss": report["loss"],
        "macro_f1": report["macro_f1"],
        "epochs_run": len(history.epochs),
        "best_epoch": best_epoch,
        "best_val_loss": early.best if early.monitor == "val_loss" else None,
        "stopped_early": early.stopped_epoch is not None,
        "train_seconds": sum(row["seconds"] for row in history.epochs),
        "wall_seconds_this_session": wall,
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "num_test_samples": report["num_samples"],
    }
    if config.compile or trainer.compile_seconds:
        # The first compiled steps (compiling included: the model with --compile, else the fast
        # preset's max-pool kernels), also inside train_seconds.
        metrics["compile_seconds"] = trainer.compile_seconds
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False))
    try:
        from ..viz.report import write_report

        write_report(out, trainer.model, test)
    except Exception as exc:  # the run is complete on disk; a failed report must not lose it
        print(
            f"cnnkit: warning: no report.html: {type(exc).__name__}: {exc} "
            f"(retry with `cnnkit report {out}`)",
            file=sys.stderr,
        )
    return metrics


def read_run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` record of any run folder (``folder.read_run``).

    Raises:
        UsageError: not a run folder.
    """
    return read_run(run_dir).record


def load_classify_run(run: RunInfo, device: str | torch.device | None = None) -> tuple[nn.Module, dict]:
    """Rebuild a classification (or fine-tuned) run's model with its best weights, in eval mode."""
    record = run.record
    config = RunConfig.from_dict(record["run"])
    weights = run.path / (SHIPPED_WEIGHTS if run.shipped else BEST_WEIGHTS)
    if not weights.is_file():
        raise UsageError(f"{run.path} has no {BEST_WEIGHTS} (did training finish an epoch?)")
    model = build_model(config, record["num_classes"], record["input_shape"][0])
    load_strict(model, load_state_dict_file(weights), source=str(weights))
    model.class_names = record.get("class_names")  # type: ignore[assignment]
    dev = device if isinstance(device, torch.device) else pick_device(device)
    return model.to(dev).eval(), record


__all__ = ["load_dataset", "load_run", "read_run_config", "train_run"]
