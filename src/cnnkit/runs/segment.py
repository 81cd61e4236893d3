"""Segmentation runs: FCN-32s/16s/8s or U-Net heads (semantic) and Mask R-CNN (instances).

A run folder has the files of every run (``runs/folder.py``): ``config.json`` (settings under
``"run"``, model, head, class names, canvas, data, versions, machine), ``best.safetensors``,
``last.ckpt`` (exact resume), ``history.csv`` / ``history.json``, ``curves.png``,
``metrics.json`` (test scores and timings) and ``report.html``. The model itself is built by
``tasks/segmentation`` (``build_segmenter``, ``build_mask_rcnn``); training runs through the
engine (``SegmentationTrainer``, ``MaskRCNNTrainer``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine.device import pick_device
from ..engine.trainer import Trainer, seed_everything
from ..errors import UsageError
from ..io.weights import load_state_dict_file, load_strict
from . import folder
from .config import INSTANCE_HEADS, SegmentConfig
from .session import prepare_device


@dataclass
class _Parts:
    """What a run trains and tests, as the semantic and the instance heads build it."""

    trainer: Trainer
    train: Any
    val: Any
    test: Any
    class_names: list[str]
    data_info: dict[str, Any]
    scores: Callable[[dict[str, Any]], dict[str, Any]]  # test report -> the metrics.json scores
    in_chans: int


def segment_config(record: dict[str, Any]) -> SegmentConfig:
    """The SegmentConfig a run recorded (folders written before the run section had ``task``
    read as segmentation runs too)."""
    return SegmentConfig.from_dict({**record["run"], "task": "segment"})


def train_segment(
    config: SegmentConfig,
    out: str | os.PathLike[str],
    resume: bool = False,
    progress: bool = True,
    on_started: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train as ``config`` says and fill the run folder ``out``; returns the test metrics.

    With ``resume``, ``out`` must be an earlier segmentation run folder: training continues from
    its ``last.ckpt`` (model, optimizer moments, schedule, early-stopping state, RNGs, thread
    count) and ends bit-identical to an uninterrupted run on the same machine.

    Raises:
        UsageError: a bad setting, a non-empty ``out`` without ``resume``, or a ``resume``
            without a checkpoint.
        DataError: unusable data, naming the file and value.
        TrainingError: a non-finite loss, gradient or weight (``last.ckpt`` keeps the last
            finished epoch; no metrics.json is written).
    """
    from ..tasks.segmentation.data import scenes_with

    config.validate()
    scenes_with(config.scenes)  # unknown or impossible scene settings fail before anything is written
    out = Path(out)
    state = folder.open_folder(out, resume)
    device = prepare_device(config.device, state)
    build = _instance_parts if config.head in INSTANCE_HEADS else _semantic_parts
    parts = build(config, out, device, progress)
    folder.require_samples(config.data, train=parts.train, validation=parts.val, test=parts.test)
    trainer = parts.trainer
    record = folder.run_record(
        "segment",
        config.to_dict(),
        device,
        kind="instance" if config.head in INSTANCE_HEADS else "semantic",
        model=config.model,
        head=config.head,
        class_names=parts.class_names,
        num_classes=len(parts.class_names),
        in_chans=parts.in_chans,
        input_shape=parts.data_info["input_shape"],
        canvas=parts.data_info.get("canvas"),
        data=parts.data_info,
        num_parameters=sum(p.numel() for p in trainer.model.parameters()),
    )
    folder.write_config(out, record, on_started)
    start, cpu_start = time.perf_counter(), time.process_time()
    history = folder.fit_run(
        trainer, out, state, parts.train, parts.val,
        epochs=config.epochs, batch_size=config.batch_size, num_samples=len(parts.train),
        validation_freq=config.validation_freq,
    )  # fmt: skip
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    best = folder.best_epoch(trainer.callbacks)
    folder.save_history(out, history, best, title=f"{config.model} + {config.head} on {config.data}")
    start = time.perf_counter()
    report = trainer.evaluate(parts.test)
    try:
        load = list(os.getloadavg())
    except (AttributeError, OSError):
        load = None
    metrics = {
        **parts.scores(report),
        "num_test_images": report["num_images"],
        "epochs_run": len(history.epochs),
        "best_epoch": best,
        # Over every session of a resumed run; the wall and CPU times are of this session only.
        "train_seconds": sum(row["seconds"] for row in history.epochs),
        "wall_seconds_this_session": wall,
        # CPU time of this process (all its threads): what an idle machine would need, roughly.
        "train_cpu_seconds": cpu,
        "test_seconds": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(),
        "amp": trainer.amp,
        "load_average_at_end": load,
    }
    folder.write_json(out / folder.METRICS_FILE, metrics)
    folder.write_report_safely(out, trainer.model)
    folder.release_folder(out)  # the run is complete on disk: another process may resume or read it
    return metrics


def semantic_splits(config: SegmentConfig) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(train, val, test, data description) of a semantic segmentation run, as it trained and
    as ``cnnkit evaluate`` rebuilds its test split."""
    from ..tasks.segmentation.data import load_segmentation_data, scenes_with

    return load_segmentation_data(
        config.data,
        scenes=scenes_with(config.scenes),
        limit_train=config.limit_train,
        limit_test=config.limit_test,
        seed=config.seed,
        image_size=config.image_size,
    )


def _trainer_options(
    config: SegmentConfig, out: Path, monitor: str, device: torch.device, progress: bool
) -> dict[str, Any]:
    """The engine options both heads' trainers take from a run's config and folder."""
    return {
        "optimizer": config.optimizer,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "callbacks": folder.run_callbacks(out, monitor, config.patience, progress, mode="max"),
        "device": device,
        "seed": config.seed,
        "checkpoint_path": out / folder.LAST_CHECKPOINT,
        "max_grad_norm": config.max_grad_norm,
        "ema": config.ema,
        "sync_bn": config.sync_bn,
        **config.engine_divergence(),
    }


def _semantic_parts(config: SegmentConfig, out: Path, device: torch.device, progress: bool) -> _Parts:
    from ..tasks.segmentation.heads import build_segmenter
    from ..tasks.segmentation.loss import SegmentationLoss
    from ..tasks.segmentation.task import SegmentTask
    from ..tasks.segmentation.train import SegmentationTrainer

    train, val, test, info = semantic_splits(config)
    seed_everything(config.seed, config.deterministic)
    model = build_segmenter(
        config.model,
        config.head,
        train.num_classes,
        in_chans=train.input_shape[0],
        backbone_weights=config.backbone_weights,
        **config.model_kwargs,
    )
    trainer = SegmentationTrainer(
        model,
        loss=SegmentationLoss(config.dice_weight, train.ignore_index),
        **_trainer_options(config, out, SegmentTask.monitor, device, progress),
    )

    def scores(report: dict[str, Any]) -> dict[str, Any]:
        return {
            "test_miou": report["miou"],
            "test_pixel_accuracy": report["pixel_accuracy"],
            "test_mean_accuracy": report["mean_accuracy"],
            "test_loss": report["loss"],
            "per_class_iou": report["per_class_iou"],
            "confusion_matrix": report["confusion_matrix"],
        }

    return _Parts(trainer, train, val, test, train.class_names, info, scores, train.input_shape[0])


def _instance_parts(config: SegmentConfig, out: Path, device: torch.device, progress: bool) -> _Parts:
    from ..tasks.segmentation.data import DEFAULT_SIZES, SCENE_NAMES, scene_splits, scenes_with
    from ..tasks.segmentation.instance import build_mask_rcnn
    from ..tasks.segmentation.instance_task import MaskRCNNTask, MaskRCNNTrainer

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
    trainer = MaskRCNNTrainer(model, **_trainer_options(config, out, MaskRCNNTask.monitor, device, progress))

    def scores(report: dict[str, Any]) -> dict[str, Any]:
        return {
            "test_segm_map": report["segm"]["map"],
            "test_segm_map_50": report["segm"]["map_50"],
            "test_bbox_map": report["bbox"]["map"],
            "segm": report["segm"],
            "bbox": report["bbox"],
        }

    in_chans = int(getattr(model, "in_chans", 3))
    return _Parts(trainer, train, val, test, class_names, info, scores, in_chans)


def load_segment_run(
    run: str | os.PathLike[str] | folder.RunInfo, device: str | torch.device | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a segmentation run's model with its best weights, in eval mode, with its record.

    Raises:
        UsageError: not a segmentation run folder, or one without best weights.
        WeightsError: weights that do not fit the model the record describes.
    """
    from ..tasks.segmentation.heads import build_segmenter
    from ..tasks.segmentation.instance import build_mask_rcnn

    run = run if isinstance(run, folder.RunInfo) else folder.read_run(run)
    if run.task != "segment":
        raise UsageError(f"{run.describe()}, not a segmentation run (train one with `cnnkit train segment`)")
    record = run.record
    config = segment_config(record)
    weights = run.path / folder.BEST_WEIGHTS
    if not weights.is_file():
        raise UsageError(f"{run.path} has no {folder.BEST_WEIGHTS} (did training finish an epoch?)")
    if config.head in INSTANCE_HEADS:
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


__all__ = ["load_segment_run", "segment_config", "semantic_splits", "train_segment"]
