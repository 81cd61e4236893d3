"""Segmentation run folders: train a head on a backbone and keep what is needed to use it later.

A run folder holds ``config.json`` (settings, model, head, class names, canvas, data, versions,
machine), ``best.safetensors`` (the weights of the best validation epoch, written by
``cnnkit.io.save_weights``), ``history.csv`` / ``history.json`` and ``metrics.json`` (test scores
and timings).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...engine.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
from ...engine.device import pick_device
from ...engine.trainer import seed_everything
from ...errors import UsageError
from ...io.atomic import atomic_write_text
from ...io.weights import load_state_dict_file, load_strict
from .heads import HEADS, build_segmenter

CONFIG_FILE = "config.json"
BEST_WEIGHTS = "best.safetensors"
INSTANCE_HEADS = ("maskrcnn",)
ALL_HEADS = (*HEADS, *INSTANCE_HEADS)


@dataclass
class SegmentConfig:
    """Settings of one segmentation run (saved in ``config.json`` under ``"run"``).

    Attributes:
        model: registered backbone name (or a torchvision Mask R-CNN name for ``maskrcnn``).
        head: one of ALL_HEADS.
        data: ``'fashion-scenes'`` or a mask folder (see ``load_segmentation_data``).
        epochs: training epochs.
        batch_size: images per step.
        lr: peak learning rate (cosine decay to 0 over the run).
        optimizer: ``'adam'``, ``'adamw'``, ``'sgd'`` or ``'rmsprop'``.
        weight_decay: passed to the optimizer.
        patience: early-stopping patience in epochs on the validation score (None: never stop).
        dice_weight: weight of the soft Dice term added to the cross-entropy.
        seed: seeds weights, batch order and flips.
        device: device name, or None for the best available.
        limit_train: FashionScenes: training images (default 12000 for FCN / U-Net, 4000 for
            Mask R-CNN); folders: keep so many.
        limit_test: the same for the test split (default 1000).
        image_size: mask folders: resize every pair to this side.
        weights: ``maskrcnn`` with a torchvision architecture: COCO weights (file or name).
        backbone_weights: FCN / U-Net: a classification run (or state dict) of the same model
            to start the backbone from.
        model_kwargs: options of the backbone's builder (e.g. ``{"small_input": true}``).
        scenes: FashionScenes parameters that differ from ``DEFAULT_SCENES`` (``canvas``,
            ``min_size``, ``max_size``, ``min_objects``, ``max_objects``, ``clutter``, ``noise``).
        deterministic: deterministic algorithms only.
    """

    model: str = "fashion_bn_cnn"
    head: str = "fcn8s"
    data: str = "fashion-scenes"
    # The schedule of the documented FashionScenes results (docs/segmentation.md).
    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    patience: int | None = None
    dice_weight: float = 0.0
    seed: int = 42
    device: str | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    image_size: int | None = None
    weights: str | None = None
    backbone_weights: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    scenes: dict[str, Any] = field(default_factory=dict)
    deterministic: bool = False

    def validate(self) -> None:
        """Raises UsageError naming the first setting that cannot be used."""
        if self.head not in ALL_HEADS:
            raise UsageError(f"--head must be one of {', '.join(ALL_HEADS)}, got {self.head!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be an int >= 1, got {value!r}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr!r}")
        if self.dice_weight < 0:
            raise UsageError(f"--dice-weight must be >= 0, got {self.dice_weight!r}")
        if self.weights is not None and self.head not in INSTANCE_HEADS:
            raise UsageError(f"--weights is for --head maskrcnn (COCO weights), not {self.head}")
        if self.backbone_weights is not None and self.head in INSTANCE_HEADS:
            raise UsageError("--backbone-weights is for FCN and U-Net heads, not maskrcnn")
        from .data import scenes_with

        scenes_with(self.scenes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SegmentConfig:
        """Build from a dict, rejecting unknown keys with the valid ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown segmentation settings {unknown}; valid: {sorted(known)}")
        return cls(**values)


def _record(
    config: SegmentConfig, class_names: list[str], data_info: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    from ...runs.classify import machine_info, versions

    shape = data_info["input_shape"]
    return {
        "task": "segment",
        "kind": "instance" if config.head in INSTANCE_HEADS else "semantic",
        "model": config.model,
        "head": config.head,
        "run": config.to_dict(),
        "class_names": class_names,
        "num_classes": len(class_names),
        "in_chans": shape[0],
        "input_shape": shape,
        "canvas": data_info.get("canvas"),
        "data": data_info,
        "versions": versions(),
        "machine": machine_info(device),
    }


def _prepare_folder(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"run folder {out} already exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def _callbacks(monitor: str, patience: int | None, out: Path, progress: bool) -> list:
    callbacks: list = [ModelCheckpoint(out / BEST_WEIGHTS, monitor=monitor)]
    # Patience None: never stop early, but still restore the best epoch's weights at the end.
    callbacks.append(EarlyStopping(monitor, patience=patience))
    if progress:
        callbacks.append(ProgressBar())  # shows the task's `shown` keys
    return callbacks


def train_segmentation(
    config: SegmentConfig, out: str | os.PathLike[str], progress: bool = True
) -> dict[str, Any]:
    """Train as ``config`` says and fill the run folder ``out``; returns the test metrics.

    Raises:
        UsageError: a bad setting or a non-empty ``out``.
        DataError: unusable data, naming the file and value.
    """
    config.validate()
    out = Path(out)
    _prepare_folder(out)
    device = pick_device(config.device)
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        from ...engine.perf import pick_num_threads, set_threads

        # On a shared machine, threads that wait for busy cores stall every op (train/perf.py).
        set_threads(pick_num_threads())
    if config.head in INSTANCE_HEADS:
        return _train_instance(config, out, device, progress)
    from .data import load_segmentation_data, scenes_with
    from .losses import SegmentationLoss
    from .task import SegmentTask
    from .train import SegmentationTrainer

    train, val, test, info = load_segmentation_data(
        config.data,
        scenes=scenes_with(config.scenes),
        limit_train=config.limit_train,
        limit_test=config.limit_test,
        seed=config.seed,
        image_size=config.image_size,
    )
    seed_everything(config.seed, config.deterministic)
    model = build_segmenter(
        config.model,
        config.head,
        train.num_classes,
        in_chans=train.input_shape[0],
        backbone_weights=config.backbone_weights,
        **config.model_kwargs,
    )
    record = _record(config, train.class_names, info, device)
    record["num_parameters"] = sum(p.numel() for p in model.parameters())
    atomic_write_text(out / CONFIG_FILE, json.dumps(record, indent=2, ensure_ascii=False))
    trainer = SegmentationTrainer(
        model,
        loss=SegmentationLoss(config.dice_weight, train.ignore_index),
        optimizer=config.optimizer,
        lr=config.lr,
        weight_decay=config.weight_decay,
        callbacks=_callbacks(SegmentTask.monitor, config.patience, out, progress),
        device=device,
        seed=config.seed,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    history = trainer.fit(train, val, epochs=config.epochs, batch_size=config.batch_size)
    train_seconds = time.perf_counter() - start
    train_cpu = time.process_time() - cpu_start
    history.save(out)
    start = time.perf_counter()
    report = trainer.evaluate(test)
    metrics = {
        "test_miou": report["miou"],
        "test_pixel_accuracy": report["pixel_accuracy"],
        "test_mean_accuracy": report["mean_accuracy"],
        "test_loss": report["loss"],
        "per_class_iou": report["per_class_iou"],
        "confusion_matrix": report["confusion_matrix"],
        "num_test_images": report["num_images"],
        **_timing(trainer, history, train_seconds, train_cpu, time.perf_counter() - start),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False))
    return metrics


def _timing(trainer: Any, history: Any, train_seconds: float, train_cpu: float, eval_seconds: float) -> dict:
    early = next(cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping))
    try:
        load = list(os.getloadavg())
    except (AttributeError, OSError):
        load = None
    return {
        "epochs_run": len(history.epochs),
        "best_epoch": None if early.best_epoch is None else early.best_epoch + 1,
        "train_seconds": train_seconds,
        # CPU time of this process (all its threads): what an idle machine would need, roughly.
        "train_cpu_seconds": train_cpu,
        "test_seconds": eval_seconds,
        "torch_threads": torch.get_num_threads(),
        "amp": getattr(trainer, "amp", None),
        "load_average_at_end": load,
    }


def _train_instance(config: SegmentConfig, out: Path, device: torch.device, progress: bool) -> dict[str, Any]:
    from .data import DEFAULT_SIZES, SCENE_NAMES, scene_splits, scenes_with
    from .instance import build_mask_rcnn
    from .instance_task import MaskRCNNTask, MaskRCNNTrainer

    if config.data not in SCENE_NAMES:
        raise UsageError(
            f"--head maskrcnn trains on FashionScenes instance masks (--data fashion-scenes); "
            f"got {config.data!r}"
        )
    scenes = scenes_with(config.scenes)
    train, val, test = scene_splits(
        scenes,
        train_images=config.limit_train or DEFAULT_SIZES["train"],
        test_images=config.limit_test or DEFAULT_SIZES["test"],
    )
    class_names = ["background", *train.class_names]
    seed_everything(config.seed, config.deterministic)
    model = build_mask_rcnn(
        config.model,
        len(class_names),
        in_chans=train.images.shape[1],
        image_size=scenes.canvas,
        weights=config.weights,
        **config.model_kwargs,
    )
    info = {
        "kind": "fashion-scenes-instances",
        "scenes": {k: v for k, v in dataclasses.asdict(scenes).items() if k not in ("split", "num_images")},
        "canvas": scenes.canvas,
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "input_shape": list(train.images.shape[1:]),
    }
    record = _record(config, class_names, info, device)
    record["num_parameters"] = sum(p.numel() for p in model.parameters())
    record["in_chans"] = int(getattr(model, "in_chans", 3))
    atomic_write_text(out / CONFIG_FILE, json.dumps(record, indent=2, ensure_ascii=False))
    trainer = MaskRCNNTrainer(
        model,
        optimizer=config.optimizer,
        lr=config.lr,
        weight_decay=config.weight_decay,
        callbacks=_callbacks(MaskRCNNTask.monitor, config.patience, out, progress),
        device=device,
        seed=config.seed,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    history = trainer.fit(train, val, epochs=config.epochs, batch_size=config.batch_size)
    train_seconds = time.perf_counter() - start
    train_cpu = time.process_time() - cpu_start
    history.save(out)
    start = time.perf_counter()
    report = trainer.evaluate(test)
    metrics = {
        "test_segm_map": report["segm"]["map"],
        "test_segm_map_50": report["segm"]["map_50"],
        "test_bbox_map": report["bbox"]["map"],
        "segm": report["segm"],
        "bbox": report["bbox"],
        "num_test_images": report["num_images"],
        **_timing(trainer, history, train_seconds, train_cpu, time.perf_counter() - start),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False))
    return metrics


def read_segment_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of a segmentation run folder.

    Raises:
        UsageError: not a run folder, or not a segmentation run.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a cnnkit run folder ({CONFIG_FILE} is missing)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if record.get("task") != "segment":
        raise UsageError(
            f"{run_dir} is a {record.get('task', 'classify')!r} run, not a segmentation run "
            "(train one with `cnnkit train --task segment`)"
        )
    return record


def load_segment_run(
    run_dir: str | os.PathLike[str], device: str | torch.device | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a run's model with its best weights, in eval mode, with its ``config.json``."""
    record = read_segment_run(run_dir)
    config = SegmentConfig.from_dict(record["run"])
    weights = Path(run_dir) / BEST_WEIGHTS
    if not weights.is_file():
        raise UsageError(f"{run_dir} has no {BEST_WEIGHTS} (did training finish an epoch?)")
    if config.head in INSTANCE_HEADS:
        from .instance import build_mask_rcnn

        model: nn.Module = build_mask_rcnn(
            config.model,
            record["num_classes"],
            in_chans=record["input_shape"][0],
            image_size=record["canvas"] or 64,
            **config.model_kwargs,
        )
    else:
        model = build_segmenter(
            config.model,
            config.head,
            record["num_classes"],
            in_chans=record["in_chans"],
            **config.model_kwargs,
        )
    load_strict(model, load_state_dict_file(weights), source=str(weights))
    dev = device if isinstance(device, torch.device) else pick_device(device)
    return model.to(dev).eval(), record


__all__ = [
    "ALL_HEADS",
    "INSTANCE_HEADS",
    "SegmentConfig",
    "load_segment_run",
    "read_segment_run",
    "train_segmentation",
]
