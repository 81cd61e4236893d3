"""Classification runs: train a registered model on a dataset and keep everything needed to look back.

A run folder holds ``config.json`` (resolved config, seed, versions, machine), ``best.safetensors``,
``last.ckpt`` (exact resume), ``history.csv`` / ``history.json``, ``curves.png``, ``metrics.json``
and ``report.html`` (the HTML report of :mod:`cnnkit.viz.report`).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.arrays import ArrayDataset
from ..data.folders import format_balance
from ..engine.callbacks import EarlyStopping
from ..engine.device import pick_device
from ..engine.distributed import current
from ..engine.trainer import seed_everything
from ..errors import DataError, UsageError
from ..io.weights import load_state_dict_file, load_strict
from ..layers.whitening import freeze_first_conv, whiten_first_conv
from ..models import create_model, model_entry
from ..tasks.classify.presets import trainer_extras
from ..tasks.classify.task import ClassifyTrainer
from . import folder
from .config import IMAGE_FOLDER_RESIZE, RunConfig
from .session import prepare_device, thread_controller

FASHION_NAMES = ("fashion-mnist", "fashion_mnist", "fashion")


def data_kind(spec: str) -> str:
    """``"fashion-mnist"``, ``"idx"`` (a folder with ``train-images*`` / ``t10k-images*`` files)
    or ``"image-folder"`` (anything else that is a folder).

    Raises:
        UsageError: neither the name nor an existing folder.
    """
    from ..data.splits import is_idx_folder

    if spec in FASHION_NAMES:
        return "fashion-mnist"
    path = Path(spec)
    if not path.exists():
        raise UsageError(
            "--data must be 'fashion-mnist' or a folder (of MNIST-format IDX files, or of images in "
            f"one sub-folder per class): no such folder {spec!r}"
        )
    if not path.is_dir():
        raise UsageError(
            "--data must be 'fashion-mnist' or a folder (of MNIST-format IDX files, or of images in "
            f"one sub-folder per class), not the file {spec!r}"
        )
    return "idx" if is_idx_folder(path) else "image-folder"


def image_settings(config: RunConfig) -> tuple[list[int], int]:
    """([height, width], channels) the images of an image folder are loaded at.

    The config's own, else the model's input: its ``input_size`` option, 28 × 28 with
    ``small_input``, else the registry's input size (28 × 28 × 1 for the course's models).
    """
    entry = model_entry(config.model)
    options = config.model_kwargs or {}
    if config.image_size:
        size = list(config.image_size)
    elif isinstance(options.get("input_size"), int):
        size = [options["input_size"]] * 2
    elif options.get("small_input"):
        size = [28, 28]
    else:
        size = list(entry.input_size[1:])
    return size, int(config.channels or entry.input_size[0])


def load_splits(
    config: Any,
    image_size: tuple[list[int], int] | None = None,
    *,
    stratify: bool | None = None,
    **image_options: Any,
) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset, dict[str, Any]]:
    """(train, val, test, data description) of a run, as ``train_run`` and ``finetune_run`` use them.

    ``config`` is a RunConfig or a FinetuneConfig (its ``data``, limits, seed and fractions);
    ``image_size`` ([height, width], channels) overrides :func:`image_settings`, ``stratify``
    the config's, and ``image_options`` (``resize``, ``on_error``) go to
    :func:`image_folder_data`.

    Fashion-MNIST and IDX folders: the official test set, validation held out of the (limited)
    training set. Image folders: :func:`cnnkit.data.splits.load_image_splits` (``train/``,
    ``val/``, ``test/`` sub-folders, or one sub-folder per class split with the run's seed);
    ``limit_train`` / ``limit_test`` then apply to the training and test splits.
    """
    kind = data_kind(config.data)
    if kind != "image-folder":
        train_all, test = load_dataset(config.data, config.limit_train, config.limit_test, config.seed)
        stratify = config.stratify if stratify is None else stratify
        train, val = train_all.split(config.val_fraction, seed=config.seed, stratify=stratify)
        info: dict[str, Any] = {"kind": kind}
    else:
        size, channels = image_size or image_settings(config)
        fractions = {"val_fraction": config.val_fraction, "test_fraction": config.test_fraction}
        train, val, test, info = image_folder_data(
            config.data, size, channels, seed=config.seed, **fractions, **image_options
        )
        train, test = _limited(train, test, config.limit_train, config.limit_test, config.seed)
    info["sizes"] = {"train": len(train), "val": len(val), "test": len(test)}
    folder.require_samples(config.data, train=train, validation=val, test=test)
    return train, val, test, info


def image_folder_data(
    spec: str,
    size: list[int],
    channels: int,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    resize: str = IMAGE_FOLDER_RESIZE,
    on_error: str = "raise",
) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset, dict[str, Any]]:
    """(train, val, test, data description) of an image folder, as every classifier run loads it.

    ``train/``, ``val/``, ``test/`` sub-folders are used as they are; one sub-folder per class is
    split with ``seed`` (:func:`cnnkit.data.splits.load_image_splits`). The description records the
    layout (``splits`` or ``classes``) and the splits held out of the training images.
    ``cnnkit train`` uses the default ``resize`` and ``on_error``; ``cnnkit finetune`` its own.

    Raises:
        DataError: layout problems or a bad file (see ``load_image_splits``).
        UsageError: fractions that leave no training images, or a bad size.
    """
    from ..data.splits import load_image_splits
    from ..engine.distributed import map_shared

    try:
        splits = load_image_splits(
            spec,
            tuple(size),
            channels=channels,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            resize=resize,
            on_error=on_error,
            # A data-parallel run's processes decode a share each; one process, with its workers.
            map_files=map_shared if current().active else None,
        )
    except DataError:
        raise
    except ValueError as exc:  # fractions that leave no training images, a bad size
        raise UsageError(f"--data {spec}: {exc}") from None
    train, val, test = splits.train, splits.val, splits.test
    info = splits.info()
    info["image_size"], info["channels"], info["resize"] = list(size), channels, resize
    return train, val, test, info


def _limited(
    train: ArrayDataset, test: ArrayDataset, limit_train: int | None, limit_test: int | None, seed: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """The first ``limit_train`` training items in a ``seed`` order and ``limit_test`` test items
    in a fixed order (so that `cnnkit evaluate` scores the run's own test subset)."""
    train = train.take(limit_train, seed=seed) if limit_train else train
    return train, test.take(limit_test, seed=0) if limit_test else test


def load_dataset(
    spec: str,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
    *,
    image_size: list[int] | tuple[int, int] = (28, 28),
    channels: int = 1,
    val_fraction: float = 0.2,
    test_fraction: float = 0.1,
    resize: str = IMAGE_FOLDER_RESIZE,
    on_error: str = "raise",
) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) for a data spec: ``fashion-mnist``, a folder of MNIST-format IDX files or an
    image folder (see :func:`load_splits`; its training split without the validation share).

    For an image folder, ``seed``, the fractions, ``image_size``, ``channels``, ``resize`` and
    ``on_error`` select the split and its pixels: pass :func:`run_data_options` of a run to get
    that run's own test images.
    """
    from ..data.fashion_mnist import load_fashion_mnist

    kind = data_kind(spec)
    if kind == "fashion-mnist":
        train, test = load_fashion_mnist()
    elif kind == "idx":
        train, test = load_fashion_mnist(spec)
        train.name, test.name = f"{spec}/train", f"{spec}/test"
    else:
        options = {"val_fraction": val_fraction, "test_fraction": test_fraction, "resize": resize}
        train, _, test, _ = image_folder_data(
            spec, list(image_size), channels, seed=seed, on_error=on_error, **options
        )
    return _limited(train, test, limit_train, limit_test, seed)


def run_data_options(record: dict[str, Any]) -> dict[str, Any]:
    """:func:`load_dataset` keyword arguments that rebuild a run's own splits from its config.json.

    A fine-tuning run's split settings are those of its ``finetune`` section (its ``run``
    section keeps only the settings the two configs share); an image folder's size, channels
    and resize mode are those its ``data`` section records.
    """
    run = record.get("finetune") if isinstance(record.get("finetune"), dict) else record.get("run") or {}
    shape = record.get("input_shape") or [1, 28, 28]
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    return {
        "seed": run.get("seed", 42),
        "image_size": data.get("image_size") or _pair_or_none(run.get("image_size")) or list(shape[1:]),
        "channels": data.get("channels") or run.get("channels") or shape[0],
        "val_fraction": run.get("val_fraction", 0.2),
        "test_fraction": run.get("test_fraction", 0.1),
        "resize": data.get("resize") or run.get("resize") or IMAGE_FOLDER_RESIZE,
        "on_error": run.get("on_error", "raise"),
    }


def _pair_or_none(size: Any) -> list[int] | None:
    return list(size) if isinstance(size, (list, tuple)) else None


def build_model(config: RunConfig, num_classes: int, in_chans: int) -> nn.Module:
    return create_model(config.model, num_classes=num_classes, in_chans=in_chans, **model_options(config))


def check_input_fits(model: nn.Module, shape: tuple[int, int, int], config: RunConfig) -> None:
    """One zero image through ``model`` (eval mode, no gradients) before any training.

    Raises:
        DataError: the data's images are a shape the model cannot take, naming both.
    """
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros((1, *shape)))
    except (RuntimeError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        fix = "use larger images or another --model"
        entry = model_entry(config.model)
        if entry.small_input and not (config.model_kwargs or {}).get("small_input"):
            c, h, w = entry.input_size  # lenet5 on Fashion-MNIST: 32x32x1 against 28x28x1
            fix = f"{config.model} takes {h}x{w}x{c}: add --small-input for its 28x28 variant, or {fix}"
        raise DataError(
            f"{config.data}: its {shape[1]}x{shape[2]}x{shape[0]} images do not fit {config.model} "
            f"({reason}); {fix}"
        ) from None
    finally:
        model.train(was_training)


def model_options(config: RunConfig) -> dict[str, Any]:
    """The builder options: ``model_kwargs``, plus ``input_size`` for the builders that size their
    dense layers by it (the course's CNNs) when an image folder is loaded at another size.

    Raises:
        UsageError: a non-square image size for such a builder.
    """
    options = dict(config.model_kwargs)
    if config.image_size is None or "input_size" in options:
        return options
    if "input_size" in inspect.signature(model_entry(config.model).builder).parameters:
        height, width = config.image_size
        if height != width:
            raise UsageError(
                f"{config.model} takes square images; give --image-size {height} (not {height}x{width})"
            )
        if [height, width] != list(model_entry(config.model).input_size[1:]):
            options["input_size"] = height
    return options


def make_trainer(config: RunConfig, model: nn.Module, out: Path, progress: bool = True) -> ClassifyTrainer:
    callbacks = folder.run_callbacks(out, config.monitor, config.patience, progress)
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
        checkpoint_path=out / folder.LAST_CHECKPOINT,
        max_grad_norm=config.max_grad_norm,
        ema=config.ema,
        **config.engine_divergence(),
        compile=config.compile,
        sync_bn=config.sync_bn,
        # augmentation, LR schedule, TTA
        **trainer_extras(config.preset, config.lr, config.max_shift, config.cutout),
    )


def train_classify(
    config: RunConfig,
    out: str | os.PathLike[str],
    resume: bool = False,
    progress: bool = True,
    on_scored: Callable[[dict[str, Any]], None] | None = None,
    on_started: Callable[[], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train as ``config`` says and fill the run folder ``out``; returns the test metrics.

    ``on_scored(metrics)`` runs as soon as metrics.json is written, before the learning curves
    and report.html are drawn (a few seconds). ``report(text)`` receives an image folder's class
    balance over the three splits, in the main process (skipped files are in the metrics).

    With ``resume``, ``out`` must be an earlier run folder: training continues from its
    ``last.ckpt`` (model, optimizer moments, early-stopping state, RNGs) and ends bit-identical
    to an uninterrupted run on the same machine.

    Raises:
        UsageError: a non-empty ``out`` without ``resume``, or a ``resume`` without a checkpoint.
    """
    config.validate()
    out = Path(out)
    resume_state = folder.open_folder(out, resume)
    model_entry(config.model)  # unknown names fail before the data is loaded
    seed_everything(config.seed, config.deterministic)
    if data_kind(config.data) == "image-folder":  # the settings the images are loaded at, saved
        size, channels = image_settings(config)
        config = dataclasses.replace(config, image_size=size, channels=channels)
        model_options(config)  # a size the model cannot take fails before the images are read
    # The course preset keeps torch's own thread count; the speed presets take the free cores. A
    # data-parallel run's processes join here, before they decode an image folder's shares.
    ceiling = torch.get_num_threads()  # before a resumed run's own count is put back
    device = prepare_device(config.device, resume_state, pick_threads=config.preset != "course")
    train, val, test, data_info = load_splits(config, resize=config.resize, on_error=config.on_error)
    if report is not None and data_info["kind"] == "image-folder" and current().main:
        report(f"{config.data}:\n{format_balance({'train': train, 'val': val, 'test': test})}")
    model = build_model(config, train.num_classes, train.input_shape[0])
    check_input_fits(model, train.input_shape, config)
    if config.whiten:  # also when resuming: the checkpoint then loads the same filters, still frozen
        whiten_first_conv(model, train.images)  # uint8: scaled to 0..1 as the task does
    trainer = make_trainer(config, model, out, progress)
    # The free cores are re-checked as training goes (a fixed count stays: --threads, --deterministic).
    trainer.threads = thread_controller(device, config.preset != "course", config.deterministic, ceiling)
    record = folder.run_record(
        "classify",
        config.to_dict(),
        device,
        class_names=train.class_names,
        input_shape=list(train.input_shape),
        num_classes=train.num_classes,
        normalize=None,
        data=data_info,
        data_sizes={"train": len(train), "val": len(val), "test": len(test)},
        tta=trainer.task.tta or False,  # test-time augmentation in the run's evaluation: true (flip), "shift"
    )
    if data_info["kind"] == "image-folder":  # `cnnkit predict` prepares images the same way
        record["preprocess"] = {"resize": data_info["resize"]}
    folder.write_config(out, record, on_started)
    start = time.perf_counter()
    history = folder.fit_run(
        trainer, out, resume_state, train, val,
        epochs=config.epochs, batch_size=config.batch_size, num_samples=len(train),
        validation_freq=config.validation_freq,
    )  # fmt: skip
    wall = time.perf_counter() - start
    early = next(cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping))
    best = folder.best_epoch(trainer.callbacks)
    logits = trainer.logits(test)  # as the run scores: its precision and test-time augmentation
    report = trainer.task.scores(logits, test)
    metrics = {
        "test_accuracy": report["accuracy"],
        "test_loss": report["loss"],
        "macro_f1": report["macro_f1"],
        "epochs_run": len(history.epochs),
        "best_epoch": best,
        "best_val_loss": early.best if early.monitor == "val_loss" else None,
        "stopped_early": early.stopped_epoch is not None,
        "train_seconds": sum(row["seconds"] for row in history.epochs),
        "wall_seconds_this_session": wall,
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "num_test_samples": report["num_samples"],
    }
    if trainer.threads is not None:  # the thread changes, when other processes came or went
        metrics["threads"] = trainer.threads.summary()
    if data_info.get("bad_files"):  # --on-error skip: the files left out
        metrics["skipped_files"] = data_info["bad_files"]
    if config.compile or trainer.compile_seconds:
        # The first compiled steps (compiling included: the model with --compile, else the fast
        # preset's max-pool kernels), also inside train_seconds.
        metrics["compile_seconds"] = trainer.compile_seconds
    folder.write_json(out / folder.METRICS_FILE, metrics)
    if on_scored is not None:
        on_scored(metrics)
    folder.save_history(out, history, best, title=f"{config.model} on {config.data}")
    folder.write_report_safely(out, trainer.model, test, probs=logits.softmax(1))
    folder.release_folder(out)  # the run is complete on disk: another process may resume or read it
    return metrics


def read_run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` record of any run folder (``folder.read_run``).

    Raises:
        UsageError: not a run folder.
    """
    return folder.read_run(run_dir).record


def load_classify_run(
    run: folder.RunInfo, device: str | torch.device | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild a classification (or fine-tuned) run's model with its best weights, in eval mode."""
    record = run.record
    config = RunConfig.from_dict(record["run"])
    weights = run.path / (folder.SHIPPED_WEIGHTS if run.shipped else folder.BEST_WEIGHTS)
    if not weights.is_file():
        raise UsageError(f"{run.path} has no {folder.BEST_WEIGHTS} (did training finish an epoch?)")
    model = build_model(config, record["num_classes"], record["input_shape"][0])
    load_strict(model, load_state_dict_file(weights), source=str(weights))
    if config.whiten:  # its first convolution was a frozen whitening layer (whiten_first_conv)
        freeze_first_conv(model)
    model.class_names = record.get("class_names")  # type: ignore[assignment]
    dev = device if isinstance(device, torch.device) else pick_device(device)
    return model.to(dev).eval(), record


__all__ = ["load_classify_run", "load_dataset", "read_run_config", "train_classify"]
