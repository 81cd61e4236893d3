"""Fine-tuning runs: the config, the data splits and the run folder of ``cnnkit finetune``.

:func:`finetune_run` writes the layout of ``cnnkit train`` (config.json, best.safetensors,
last.ckpt, history, curves.png, metrics.json), which :func:`~cnnkit.runs.classify.load_run` reads
back; :func:`cnnkit.runs.evaluate.classify_data` rebuilds its test split.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..data.arrays import ArrayDataset
from ..data.folders import class_balance, format_balance
from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from ..engine import distributed
from ..engine.optimizers import OPTIMIZERS
from ..engine.precision import PRECISIONS, precision_settings
from ..engine.trainer import seed_everything
from ..errors import UsageError
from ..models import model_entry
from ..models._registry import check_model_options
from ..tasks.finetune.fit import FinetuneResult, finetune
from .config import RunConfig, SettingsFile, divergence_options, engine_checks, image_folder_checks
from .folder import (
    BEST_WEIGHTS,
    LAST_CHECKPOINT,
    METRICS_FILE,
    open_folder,
    progress_callbacks,
    release_folder,
    run_record,
    write_config,
    write_json,
    write_report_safely,
)
from .pretrained import _is_weights_name, _weights_source, pretrained_model
from .session import prepare_device, thread_controller

__all__ = ["FinetuneConfig", "finetune_run"]

PHASES = ("head", "full")

NORMALIZE_CHOICES = ("auto", "imagenet", "unit")


@dataclass
class FinetuneConfig(SettingsFile):
    """Everything that defines a fine-tuning run (saved in config.json under ``"finetune"``).

    Attributes:
        weights: pretrained weights (run folder, state-dict file or torchvision weights name).
        data: an image folder (``train/``, ``val/``, ``test/`` sub-folders of class folders, or
            one sub-folder per class; read as ``cnnkit train`` reads it), ``fashion-mnist``, or an
            IDX folder.
        model: registered name; None takes the run folder's.
        model_kwargs: builder options (``small_input``...).
        head_epochs / full_epochs: maximum epochs of the two phases.
        lr / lr_factor / group_lrs: phase-1 rate; phase-2 rate factor; phase-2 per-prefix rates.
        head: module prefixes trained in phase 1 (default: the new classifier).
        keep_bn_eval: keep the base's batch-norm layers in eval mode in phase 2 as well.
        val_fraction / test_fraction: seeded stratified split of an image folder without
            ``val/`` / ``test/`` sub-folders (the course: 15 % validation, 10 % test); with
            Fashion-MNIST the official test set is used.
        image_size: side of the square model input for image folders (default: the model's).
        resize: ``resize`` (stretch, as the course), ``crop`` or ``pad``.
        on_error: bad image files: ``raise`` stops at the first, ``skip`` leaves them out and
            lists them.
        normalize: ``auto`` (ImageNet statistics for torchvision weights, else the source
            run's, else [0, 1]), ``imagenet`` or ``unit``.
        limit_train: keep only N training images (quick tries, tests); with Fashion-MNIST, as
            in ``cnnkit train``, the validation split is taken from these N.
        limit_test: evaluate on only N test images.
        precision: ``auto`` (bf16 autocast and channels-last where the device computes bf16
            natively, as the fast preset), ``bf16`` or ``fp32`` (FP32, NCHW: the numerics of
            runs made before this setting existed, which resume that way).
        sync_bn: data-parallel runs: BatchNorm with the global batch's statistics.
        max_grad_norm, on_divergence, ema, validation_freq: as in every run config
            (``TrainConfig``): gradient-norm clipping, what a thousandfold loss does (``stop``,
            ``warn`` or ``off``), the decay of a moving average of the weights (each phase
            keeps its own), and validation after every so many epochs.
    """

    SECTION: ClassVar[str] = "finetune"  # of a fine-tuning run's config.json (``--config``)

    weights: str
    data: str
    model: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    head_epochs: int = 5
    full_epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    lr_factor: float = 0.1
    group_lrs: dict[str, float] = field(default_factory=dict)
    head: list[str] | None = None
    optimizer: str = "adam"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    patience: int = 2
    monitor: str = "val_loss"
    keep_bn_eval: bool = False
    seed: int = 42
    val_fraction: float = 0.15
    test_fraction: float = 0.1
    image_size: int | None = None
    resize: str = "resize"
    on_error: str = "raise"
    normalize: str = "auto"
    limit_train: int | None = None
    limit_test: int | None = None
    device: str | None = None
    deterministic: bool = False
    precision: str = "auto"
    sync_bn: bool = False
    max_grad_norm: float | None = None
    on_divergence: str = "stop"
    ema: float | None = None
    validation_freq: int = 1

    def validate(self) -> FinetuneConfig:
        checks = [
            *engine_checks(self.max_grad_norm, self.on_divergence, self.ema, self.validation_freq),
            *image_folder_checks(self.resize, self.on_error),
            (self.head_epochs >= 0 and self.full_epochs >= 0, "epochs must be >= 0"),
            (
                self.head_epochs + self.full_epochs >= 1,
                "head and full epochs are both 0: nothing to train",
            ),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.lr_factor > 0, f"lr factor must be > 0, got {self.lr_factor}"),
            (self.patience >= 0, f"patience must be >= 0, got {self.patience}"),
            (
                0 < self.val_fraction < 1,
                f"validation fraction must be in (0, 1), got {self.val_fraction}",
            ),
            (
                0 <= self.test_fraction < 1 - self.val_fraction,
                f"test fraction must be in [0, 1 - val fraction), got {self.test_fraction}",
            ),
            (
                self.image_size is None or self.image_size >= 8,
                f"image size must be >= 8, got {self.image_size}",
            ),
            (
                self.optimizer in OPTIMIZERS,
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
            ),
            (
                self.normalize in NORMALIZE_CHOICES,
                f"normalize must be one of {', '.join(NORMALIZE_CHOICES)}, got {self.normalize!r}",
            ),
            (
                self.limit_train is None or self.limit_train >= 2,
                f"limit_train must be >= 2, got {self.limit_train}",
            ),
            (
                self.precision in PRECISIONS,
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            ),
            (
                self.limit_test is None or self.limit_test >= 1,
                f"limit_test must be >= 1, got {self.limit_test}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        for prefix, rate in self.group_lrs.items():
            if not isinstance(rate, int | float) or rate < 0:
                raise UsageError(f"learning rate of group {prefix!r} must be >= 0, got {rate!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _normalization(
    config: FinetuneConfig, source: dict[str, Any] | None, channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    choice = config.normalize
    if choice == "auto" and source is not None:  # whatever the source run was trained with
        norm = source.get("normalize")
        if isinstance(norm, dict) and "mean" in norm and "std" in norm:
            return tuple(norm["mean"]), tuple(norm["std"])
        choice = norm.get("preset", "unit") if isinstance(norm, dict) else "unit"
        if choice not in NORMALIZE_CHOICES:
            raise UsageError(
                f"{config.weights} was trained with the {choice!r} preprocessing, which the trainer "
                "cannot apply; pass --normalize imagenet or unit"
            )
    if choice == "auto":
        choice = "imagenet" if _is_weights_name(config.weights) else "unit"
    if choice == "unit":
        return None
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (sum(IMAGENET_MEAN) / 3,) * channels, (sum(IMAGENET_STD) / 3,) * channels


def _load_splits(
    config: FinetuneConfig, input_size: tuple[int, int, int]
) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset, dict[str, Any]]:
    """(train, val, test, data description) for ``config.data``, loaded as ``cnnkit train`` loads
    it: an image folder's ``train/``, ``val/``, ``test/`` sub-folders as they are, one sub-folder
    per class split with the seed; the limits apply as in ``cnnkit train``."""
    from .classify import data_kind, load_splits

    channels, height, width = input_size
    train, val, test, info = load_splits(
        config, ([height, width], channels), stratify=True, resize=config.resize, on_error=config.on_error
    )
    where = "root" if data_kind(config.data) == "image-folder" else "spec"
    return train, val, test, {**info, where: str(config.data)}


def finetune_run(
    config: FinetuneConfig,
    out: str | os.PathLike[str],
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    resume: bool = False,
    on_started: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune as ``config`` says and fill the run folder ``out``; returns the test metrics.

    The folder has the layout of ``cnnkit train`` (config.json, best.safetensors, last.ckpt,
    history, curves.png, metrics.json); ``config.json`` holds a ``run`` section that
    :func:`~cnnkit.runs.classify.load_run` rebuilds the model from, and a ``finetune`` section.
    ``report`` receives the class balance of the three splits (and any skipped files) before
    training starts. With ``resume``, ``out`` is an interrupted run of the same config: training
    goes on from its ``last.ckpt`` (in the phase it records) and ends bit-identical.
    ``on_started()`` runs once the folder holds its config.json, before the first epoch.

    Raises:
        UsageError: a non-empty ``out`` without ``resume``, or settings that cannot be used.
    """
    try:
        return _finetune_run(config, Path(out), progress, report, resume, on_started)
    finally:
        release_folder(Path(out))  # claimed by open_folder; complete on disk, or failed


def _finetune_run(
    config: FinetuneConfig,
    out: Path,
    progress: bool,
    report: Callable[[str], None] | None,
    resume: bool,
    on_started: Callable[[], None] | None,
) -> dict[str, Any]:
    config.validate()
    out = Path(out)
    resume_state = open_folder(out, resume)  # made once the settings are checked
    name, in_chans, kwargs, source = _weights_source(config.model, config.weights, None, config.model_kwargs)
    entry = model_entry(name)
    try:  # an option the model's builder does not take fails before any data is read
        check_model_options(name, kwargs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    seed_everything(config.seed, config.deterministic)
    input_size = entry.input_size
    if config.image_size:
        input_size = (input_size[0], config.image_size, config.image_size)
    if in_chans is not None:
        input_size = (in_chans, *input_size[1:])
    # A data-parallel run's processes join before the data: every rank holds all of it and
    # trains on its share of each global batch, as `cnnkit train` does.
    ceiling = torch.get_num_threads()  # before a resumed run's own count is put back
    device = prepare_device(config.device, resume_state, pick_threads=False)
    main = distributed.current().main
    train, val, test, data_info = _load_splits(config, input_size)
    channels = train.input_shape[0]
    model = pretrained_model(name, config.weights, train.num_classes, in_chans=channels, **kwargs)
    normalize = _normalization(config, source, channels)
    out.mkdir(parents=True, exist_ok=True)
    # The classification run this fine-tuning is, in the settings both configs share.
    shared = ("data", "batch_size", "lr", "optimizer", "weight_decay", "label_smoothing", "patience")
    shared += ("monitor", "seed", "val_fraction", "limit_train", "limit_test", "device", "deterministic")
    amp, channels_last = precision_settings(config.precision, device)
    run_config = RunConfig(
        model=name,
        model_kwargs=kwargs,
        epochs=config.head_epochs + config.full_epochs,
        stratify=True,
        amp=amp,
        channels_last=channels_last,
        **{key: getattr(config, key) for key in shared},
    ).validate()
    splits = {"train": train, "val": val, "test": test}
    if report is not None and main:
        report(f"{name} from {config.weights} on {config.data}:\n{format_balance(splits)}")
        for reason in data_info.get("bad_files", []):
            report(f"skipped: {reason}")
    # Recorded explicitly even for [0, 1] inputs, so image loaders never guess ImageNet statistics.
    mean, std = normalize if normalize else ((0.0,) * channels, (1.0,) * channels)
    record = run_record(
        "classify",
        run_config.to_dict(),
        device,
        finetune=config.to_dict(),
        class_names=train.class_names,
        input_shape=list(train.input_shape),
        num_classes=train.num_classes,
        normalize={"mean": list(mean), "std": list(std)},
        data=data_info,
        data_sizes={"train": len(train), "val": len(val), "test": len(test)},
        class_balance=class_balance(splits),
    )
    if data_info["kind"] == "image-folder":  # so that `cnnkit predict` prepares images the same way
        record["preprocess"] = {"resize": config.resize}
    write_config(out, record, on_started)
    start = time.perf_counter()
    result = finetune(
        model,
        train,
        val,
        head_epochs=config.head_epochs,
        full_epochs=config.full_epochs,
        lr=config.lr,
        lr_factor=config.lr_factor,
        group_lrs=config.group_lrs or None,
        head=config.head,
        optimizer=config.optimizer,
        weight_decay=config.weight_decay,
        label_smoothing=config.label_smoothing,
        batch_size=config.batch_size,
        patience=config.patience,
        monitor=config.monitor,
        keep_bn_eval=config.keep_bn_eval,
        best_path=out / BEST_WEIGHTS,
        checkpoint_path=out / LAST_CHECKPOINT,
        callbacks=progress_callbacks(out, progress),  # the other ranks' progress goes to logs/
        device=device,
        seed=config.seed,
        normalize=normalize,
        amp=amp,
        channels_last=channels_last,
        resume_state=resume_state,
        sync_bn=config.sync_bn,
        max_grad_norm=config.max_grad_norm,
        ema=config.ema,
        validation_freq=config.validation_freq,
        **divergence_options(config.on_divergence),
        # The free cores are re-checked as both phases go (a fixed count stays: --threads, --deterministic).
        threads=thread_controller(device, False, config.deterministic, ceiling),
    )
    wall = time.perf_counter() - start
    if main:
        result.history.save(out)
        _plot(result, out / "curves.png", f"{name} fine-tuned on {config.data}")
    logits = result.trainer.logits(test)  # every rank: each scores its share of the images
    report = result.trainer.task.scores(logits, test)
    metrics = {
        "test_accuracy": report["accuracy"],
        "test_loss": report["loss"],
        "macro_f1": report["macro_f1"],
        "epochs_run": result.head_epochs_run + result.full_epochs_run,
        "head_epochs_run": result.head_epochs_run,
        "full_epochs_run": result.full_epochs_run,
        "best_epoch": result.best_epoch,
        "best_phase": _phase_of(result, result.best_epoch),
        "best_val_loss": result.best if config.monitor == "val_loss" else None,
        "stopped_early": result.stopped_early,
        "frozen_parameters": len(result.frozen),
        "train_seconds": sum(row["seconds"] for row in result.history.epochs),
        "wall_seconds_this_session": wall,
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "num_test_samples": report["num_samples"],
    }
    if result.trainer.threads is not None:  # the thread changes, when other processes came or went
        metrics["threads"] = result.trainer.threads.summary()
    write_json(out / METRICS_FILE, metrics)
    write_report_safely(out, result.trainer.model, test, probs=logits.softmax(1))
    return metrics


def _phase_of(result: FinetuneResult, epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return PHASES[0] if epoch <= result.head_epochs_run else PHASES[1]


def _plot(result: FinetuneResult, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    from ..viz.curves import plot_history

    fig = plot_history(result.history.epochs, result.best_epoch, None, title)
    if result.head_epochs_run and result.full_epochs_run:
        for ax in fig.axes:
            ax.axvline(
                result.head_epochs_run + 0.5,
                color="gray",
                linestyle=":",
                linewidth=1,
                label="unfrozen",
            )
            ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
