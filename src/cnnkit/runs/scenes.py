"""Localization and detection runs: a ``SceneConfig`` trained through the engine into a run folder.

A run folder holds what every run has (``config.json`` with the task, the resolved config as its
``run`` section, versions and machine; ``best.safetensors``; ``last.ckpt`` for exact resume;
``history.csv`` / ``history.json``; ``curves.png``; ``metrics.json``; ``report.html``) plus
``samples.png`` (predictions drawn on test images). Besides ``run``, ``config.json`` keeps what
rebuilds the model without the config type (model, ``model_kwargs``, ``in_chans``, ``image_size``,
``class_names``, ``head``, ``anchors``, ``data``), so runs written before the ``run`` section
existed load the same way (``load_scene_run``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import distributed
from ..engine.device import pick_device
from ..engine.perf import pick_perf_settings, tune_cpu_allocator
from ..engine.task import Task
from ..engine.trainer import seed_everything
from ..errors import DataError, UsageError
from ..io.weights import load_state_dict_file, load_strict
from . import folder
from .config import SceneConfig
from .session import prepare_device

SCENE_TASKS = ("localize", "detect")
SAMPLES_FILE = "samples.png"
VAL_IMAGES = 1000  # generated FashionScenes for validation (best epoch) and testing
TEST_IMAGES = 5000
SAMPLES_SHOWN = 8
# What config.json must hold to rebuild the model (runs written before the "run" section included).
MODEL_KEYS = ("model", "model_kwargs", "in_chans", "image_size", "class_names", "head")


# ---------------------------------------------------------------------- building a run's parts
def load_data(config: SceneConfig) -> Any:
    """The run's ``TaskData``: FashionScenes generated as ``config`` says, or COCO / YOLO data split.

    Raises:
        UsageError: scene settings FashionScenes refuses, or an unknown ``--data`` spec.
        DataError: localize data with an image of 0 or 2+ objects.
    """
    from ..data.scenes import FashionScenes
    from ..tasks.detection.data import SCENE_NAMES, load_task_data

    scenes = None  # COCO / YOLO files: the FashionScenes settings do not apply
    try:
        if config.generated():
            scenes = FashionScenes(
                split="train",
                num_images=config.train_images,
                canvas=config.canvas,
                min_objects=config.min_objects,
                max_objects=config.max_objects,
                min_size=config.item_sizes[0],
                max_size=config.item_sizes[1],
                clutter=config.clutter,
                noise=config.noise,
            )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    data = load_task_data(
        config.data,
        image_size=config.canvas,
        in_chans=1 if config.data in SCENE_NAMES else 3,
        scenes=scenes,
        num_val=VAL_IMAGES,
        num_test=TEST_IMAGES,
        limit_train=config.limit_train,
        limit_test=config.limit_test,
        seed=config.seed,
    )
    if config.task == "localize":
        for part in (data.train, data.val, data.test):
            part.single_object()  # a clear DataError before training if an image has 0 or 2+ objects
    return data


def build_backbone(config: SceneConfig, in_chans: int) -> nn.Module:
    """The run's backbone without its classifier, started from ``backbone_weights`` if given.

    Raises:
        UsageError: the model options do not fit the model, or the weights do not fit the backbone.
    """
    from ..io.weights import WeightsError
    from ..models import create_model
    from ..models.surgery import load_backbone_weights

    try:
        backbone = create_model(config.model, num_classes=0, in_chans=in_chans, **config.model_kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--model {config.model} with options {config.model_kwargs}: {exc}") from None
    if config.backbone_weights is not None:
        try:
            load_backbone_weights(backbone, config.backbone_weights)
        except (WeightsError, FileNotFoundError) as exc:
            model = f"--model {config.model} {config.model_kwargs}"
            raise UsageError(f"--backbone-weights ({model}): {exc}") from None
    return backbone


def fit_anchors(config: SceneConfig, boxes: torch.Tensor) -> tuple[list[torch.Tensor], float]:
    """(anchors of each level, ``config.anchors`` per stride, from k-means on the training boxes
    Tensor[M, 4] ``xyxy``; their mean best IoU with those boxes)."""
    from torchvision.ops import box_convert

    from ..tasks.detection.anchors import anchor_fit, kmeans_anchors, split_by_level

    wh = box_convert(boxes, "xyxy", "cxcywh")[:, 2:]
    try:
        anchors = kmeans_anchors(wh, config.anchors * len(config.strides), seed=config.seed)
    except ValueError as exc:
        raise UsageError(f"cannot compute anchors from the training boxes: {exc}; lower --anchors") from None
    return split_by_level(anchors, len(config.strides)), anchor_fit(wh, anchors)


def build_task_model(record: dict[str, Any], backbone: nn.Module | None = None) -> nn.Module:
    """A Localizer or YoloDetector as a run's ``config.json`` record describes it (``backbone``:
    the one to use, else a fresh one from the record)."""
    if backbone is None:
        from ..models import create_model

        backbone = create_model(
            record["model"], num_classes=0, in_chans=record["in_chans"], **record["model_kwargs"]
        )
    num_classes, in_chans, size = len(record["class_names"]), record["in_chans"], record["image_size"]
    if record["task"] == "localize":
        from ..tasks.localization.model import Localizer

        return Localizer(backbone, num_classes, in_chans, size, **record["head"])
    from ..tasks.detection.model import YoloDetector

    anchors = [torch.tensor(level, dtype=torch.float32) for level in record["anchors"]]
    return YoloDetector(backbone, num_classes, in_chans, size, anchors, **record["head"])


def build_task(config: SceneConfig, record: dict[str, Any]) -> Task:
    """The engine task of the run: ``LocalizeTask`` or ``DetectTask`` (with the record's anchors)."""
    if config.task == "localize":
        from ..tasks.localization.task import LocalizeTask

        return LocalizeTask(box_loss=config.box_loss, box_weight=config.box_weight)
    from ..tasks.detection.loss import YoloLoss
    from ..tasks.detection.task import DetectTask

    anchors = [torch.tensor(level, dtype=torch.float32) for level in record["anchors"]]
    return DetectTask(YoloLoss(anchors, tuple(config.strides)))


def scene_record(config: SceneConfig, data: Any, device: torch.device, amp: str | None) -> dict[str, Any]:
    """The ``config.json`` record, before the head's anchors (detect) are added."""
    in_chans = int(data.train.images.shape[1])
    if config.task == "detect":
        head: dict[str, Any] = {"strides": list(config.strides), "width": config.head_width, "depth": 2}
    else:
        head = {"width": config.head_width}
    record = folder.run_record(
        config.task,
        config.to_dict(),
        device,
        model=config.model,
        model_kwargs=config.model_kwargs,
        backbone_weights=config.backbone_weights,
        in_chans=in_chans,
        image_size=config.canvas,
        class_names=list(data.train.class_names),
        head=head,
        data=data.record,
        data_sizes={"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        # Measured-best precision and threads of this machine (engine/perf.py); a resumed run reuses them.
        perf={"amp": amp, "channels_last": True, "num_threads": torch.get_num_threads()},
    )
    if config.task == "localize":
        record["loss"] = {"box_loss": config.box_loss, "box_weight": config.box_weight}
    return record


def _previous_amp(out: Path) -> tuple[bool, str | None]:
    """(found, amp) of the run's own config.json: a resumed run trains at the precision it began with."""
    try:
        perf = json.loads((out / folder.CONFIG_FILE).read_text(encoding="utf-8")).get("perf")
    except (OSError, ValueError, AttributeError):
        return False, None
    return (True, perf.get("amp")) if isinstance(perf, dict) else (False, None)


# ---------------------------------------------------------------------- training
def train_scenes(
    config: SceneConfig,
    out: str | os.PathLike[str],
    resume: bool = False,
    progress: bool = True,
    on_started: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train a localize / detect run as ``config`` says and fill the run folder ``out``.

    With ``resume``, ``out`` must be an earlier run folder of the same config: training continues
    from its ``last.ckpt`` (model, optimizer moments, schedule, early-stopping state, RNGs, with
    the thread count it was written with) and ends bit-identical to an uninterrupted run on the
    same machine.

    Args:
        progress: a progress bar (lines when stderr is not a terminal); without it, one line per
            epoch on stderr.

    Returns:
        The test metrics (``metrics.json``): ``test`` (the task's report), ``test_images``,
        ``best_epoch``, ``epochs_run``, ``train_seconds``, ``wall_seconds_this_session``.

    Raises:
        UsageError: settings or data that cannot be used, a non-empty ``out`` without ``resume``,
            or a ``resume`` without a checkpoint.
        TrainingError: a non-finite loss, gradient or weights (``last.ckpt`` keeps the last good epoch).
    """
    from ..models import model_entry

    config.validate()
    if config.task not in SCENE_TASKS:
        raise UsageError(f"train_scenes trains {' or '.join(SCENE_TASKS)} runs, not {config.task!r}")
    wall = time.perf_counter()
    out = Path(out)
    found, amp = _previous_amp(out) if resume else (False, None)
    state = folder.open_folder(out, resume)  # the checkpoint is verified before anything is rewritten
    model_entry(config.model)  # unknown names fail with close matches, before the data is made
    device = prepare_device(config.device, state)
    tune_cpu_allocator(device)
    if not found:  # the measured-best precision of this device (the threads are chosen above)
        amp = pick_perf_settings(device, num_threads=torch.get_num_threads()).amp
    seed_everything(config.seed, config.deterministic)

    data = load_data(config)
    folder.require_samples(config.data, train=data.train, validation=data.val, test=data.test)
    record = scene_record(config, data, device, amp)
    if config.task == "detect":
        levels, fit = fit_anchors(config, data.train.boxes)
        record["anchors"], record["anchor_fit"] = [level.tolist() for level in levels], fit
    # A resumed run's weights come from last.ckpt: the backbone file need not be there any more.
    start = config if state is None else dataclasses.replace(config, backbone_weights=None)
    model = build_task_model(record, build_backbone(start, record["in_chans"]))
    folder.write_config(out, record, on_started)

    from ..tasks.detection.fit import EpochEndCall, scene_trainer

    task = build_task(config, record)
    callbacks = folder.run_callbacks(out, task.monitor, config.patience, progress, mode="max")
    if not progress and distributed.current().main:  # one line per epoch, from rank 0
        callbacks.append(EpochEndCall(_epoch_printer(config.task)))
    trainer = scene_trainer(
        model,
        task,
        lr=config.lr,
        device=device,
        weight_decay=config.weight_decay,
        amp=amp,
        seed=config.seed,
        callbacks=callbacks,
        checkpoint_path=out / folder.LAST_CHECKPOINT,
        max_grad_norm=config.max_grad_norm,
        ema=config.ema,
        sync_bn=config.sync_bn,
        **config.engine_divergence(),
    )
    history = folder.fit_run(
        trainer, out, state, data.train, data.val,
        epochs=config.epochs, batch_size=config.batch_size, num_samples=task.num_samples(data.train),
        validation_freq=config.validation_freq,
    )  # fmt: skip
    best = folder.best_epoch(trainer.callbacks)
    folder.save_history(
        out, history, best, title=f"{config.model} {config.task} on {data.record.get('name')}"
    )
    test = trainer.evaluate(data.test)
    metrics = {
        "test": test,
        "test_images": len(data.test),
        "best_epoch": best,
        "epochs_run": len(history.epochs),
        "train_seconds": round(sum(row["seconds"] for row in history.epochs), 1),
        "wall_seconds_this_session": round(time.perf_counter() - wall, 1),
    }
    folder.write_json(out / folder.METRICS_FILE, metrics)
    save_samples(trainer.model, config.task, data.test, device, out / SAMPLES_FILE)
    folder.write_report_safely(out, trainer.model)
    folder.release_folder(out)  # the run is complete on disk: another process may resume or read it
    return metrics


def _epoch_printer(task: str) -> Any:
    if task == "detect":
        from ..tasks.detection.train import print_epoch
    else:
        from ..tasks.localization.train import print_epoch
    return print_epoch


def save_samples(model: nn.Module, task: str, test: Any, device: torch.device, path: Path) -> None:
    """The first test images with the predicted boxes (and the true ones) drawn, as one PNG."""
    from ..tasks.detection.draw import draw_detections, grid, save_png

    shown = list(range(min(SAMPLES_SHOWN, len(test))))
    if not shown:
        return
    names = test.class_names
    if task == "detect":
        from ..tasks.detection.train import predict_detector

        found = predict_detector(model, test.images[shown], device, score_threshold=0.3, class_agnostic=True)
        pictures = [
            draw_detections(
                test.images[i], d["boxes"], d["labels"], names, d["scores"], truth=test.target(i)["boxes"]
            )
            for i, d in zip(shown, found)
        ]
    else:
        from ..tasks.localization.train import predict_localizer

        labels, scores, boxes = predict_localizer(model, test.images[shown], device)
        h, w = test.image_size
        pixels = boxes * boxes.new_tensor([w, h, w, h])
        pictures = [
            draw_detections(
                test.images[i], pixels[k : k + 1], labels[k : k + 1], names, scores[k : k + 1],
                truth=test.target(i)["boxes"],
            )
            for k, i in enumerate(shown)
        ]  # fmt: skip
    save_png(grid(pictures), path)


# ---------------------------------------------------------------------- reading a run
def load_scene_run(
    run: folder.RunInfo, device: str | torch.device | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """(the run's model with its best weights, in eval mode; its ``config.json`` record).

    Works on runs written before the record had a ``run`` section or the folder a ``last.ckpt``.

    Raises:
        DataError: a record without what rebuilds the model.
        UsageError: no ``best.safetensors`` (the run did not finish an epoch).
        WeightsError: weights that do not fit the model the record describes.
    """
    record = run.record
    missing = [
        key for key in MODEL_KEYS + (("anchors",) if run.task == "detect" else ()) if key not in record
    ]
    if missing:
        raise DataError(
            f"{run.path / folder.CONFIG_FILE} has no {missing[0]!r}; "
            f"it was not written by cnnkit train {run.task}"
        )
    model = build_task_model(record)
    path = run.path / folder.BEST_WEIGHTS
    if not path.is_file():
        raise UsageError(f"{run.path} has no {folder.BEST_WEIGHTS}; the run did not finish an epoch")
    load_strict(model, load_state_dict_file(path), str(path))
    dev = device if isinstance(device, torch.device) else pick_device(device)
    return model.to(dev).eval(), record


def scene_record_settings(record: dict[str, Any]) -> dict[str, Any]:
    """The run settings of a record: its ``run`` section, or the ``train`` one of older runs."""
    settings = record.get("run") or record.get("train") or {}
    return settings if isinstance(settings, dict) else {}


__all__ = ["load_scene_run", "train_scenes"]
