"""`cnnkit train --task detect`: a YOLO-style detector on FashionScenes or your COCO / YOLO data.

Also holds what `--task localize` shares with it: the scene options (added once to the shared
`cnnkit train` parser) and the run-folder steps.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ...cli.train import parse_model_options
from ...data.scenes import FashionScenes
from ...errors import UsageError
from . import runs
from .datasets import TaskData, load_task_data

DEFAULT_MODEL = "hongong_cnn"
# Per task: canvas, training scenes, objects per image, epochs, batch size, learning rate; sized
# to train in under 15 minutes on one busy CPU core (docs/detection.md).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "localize": {"canvas": 64, "train_images": 50_000, "min_objects": 1, "max_objects": 1,
                 "epochs": 8, "batch_size": 128, "lr": 3e-3},
    "detect": {"canvas": 96, "train_images": 12_000, "min_objects": 1, "max_objects": 4,
               "epochs": 8, "batch_size": 64, "lr": 2e-3},
}  # fmt: skip
VAL_IMAGES = 1000
TEST_IMAGES = 5000


def _add_once(parser: argparse.ArgumentParser, *flags: str, **kwargs: Any) -> None:
    # --task localize and --task detect add options to the same `cnnkit train` parser.
    if not any(flag in parser._option_string_actions for flag in flags):
        parser.add_argument(*flags, **kwargs)


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the generated FashionScenes, shared by --task localize and --task detect."""
    _add_once(
        parser,
        "--canvas",
        type=int,
        metavar="PX",
        help="FashionScenes / training image side (localize 64, detect 96)",
    )
    _add_once(
        parser,
        "--train-images",
        type=int,
        metavar="N",
        help="FashionScenes to generate for training (localize 50000, detect 12000, segment 12000,"
        " maskrcnn 4000)",
    )
    _add_once(
        parser,
        "--item-sizes",
        metavar="MIN,MAX",
        default="24,48",
        help="side range of the scaled 28x28 items, pixels (default 24,48)",
    )
    _add_once(
        parser,
        "--clutter",
        type=int,
        default=0,
        metavar="N",
        help="unlabelled item fragments per scene (default 0)",
    )
    _add_once(
        parser,
        "--noise",
        type=float,
        default=0.0,
        metavar="STD",
        help="Gaussian noise, grey levels (default 0)",
    )
    _add_once(
        parser,
        "--head-width",
        type=int,
        default=128,
        metavar="C",
        help="channels of the task head (default 128)",
    )

    _add_once(
        parser,
        "--backbone-weights",
        metavar="RUN",
        help="start the backbone from this classification run or weights file (same --model and options)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of --task detect (the common ones are `cnnkit train`'s)."""
    add_scene_arguments(parser)
    _add_once(
        parser, "--min-objects", type=int, metavar="N", help="detect: fewest items per scene (default 1)"
    )
    _add_once(parser, "--max-objects", type=int, metavar="N", help="detect: most items per scene (default 4)")
    _add_once(
        parser,
        "--anchors",
        type=int,
        default=3,
        metavar="K",
        help="detect: anchors per level, from k-means on the training boxes (default 3)",
    )
    _add_once(
        parser,
        "--strides",
        default="8",
        metavar="S[,S]",
        help="detect: grid strides, e.g. 8 or 8,16 for two scales (default 8)",
    )


def _int_pair(text: str, flag: str) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{flag} takes MIN,MAX (two integers), got {text!r}") from None
    return low, high


def _parse_strides(text: str) -> tuple[int, ...]:
    try:
        strides = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(
            f"--strides takes integers separated by commas (e.g. 8 or 8,16), got {text!r}"
        ) from None
    if list(strides) != sorted(set(strides)) or min(strides) < 1:
        raise UsageError(f"--strides must be increasing and >= 1, got {text!r}")
    return strides


def _check_common(args: argparse.Namespace, task: str) -> None:
    for flag, attr in (("--resume", "resume"), ("--config", "config")):
        if getattr(args, attr, None):
            raise UsageError(f"{flag} is for classification runs; --task {task} does not take it")
    optimizer = getattr(args, "optimizer", None)
    if optimizer not in (None, "adamw"):
        raise UsageError(f"--task {task} trains with adamw; --optimizer {optimizer} is not available for it")


def settings(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """Resolved settings of a localize / detect run: flags over the task defaults.

    Raises:
        UsageError: a flag this task cannot use, or a bad value (with the valid range).
    """
    _check_common(args, task)
    d = TASK_DEFAULTS[task]

    def pick(attr: str, key: str | None = None) -> Any:
        value = getattr(args, attr, None)
        return d[key or attr] if value is None else value

    s = {
        "model": getattr(args, "model", None) or DEFAULT_MODEL,
        "model_kwargs": parse_model_options(getattr(args, "model_option", None) or []),
        "backbone_weights": getattr(args, "backbone_weights", None),
        "data": getattr(args, "data", None) or "fashion-scenes",
        "canvas": pick("canvas"),
        "train_images": pick("train_images"),
        "epochs": pick("epochs"),
        "batch_size": pick("batch_size"),
        "lr": pick("lr"),
        "seed": getattr(args, "seed", 42),
        "patience": getattr(args, "patience", None),
        "limit_train": getattr(args, "limit_train", None),
        "limit_test": getattr(args, "limit_test", None),
        "item_sizes": _int_pair(getattr(args, "item_sizes", None) or "24,48", "--item-sizes"),
        "clutter": getattr(args, "clutter", 0) or 0,
        "noise": getattr(args, "noise", 0.0) or 0.0,
        "head_width": getattr(args, "head_width", None) or 128,
        "min_objects": d["min_objects"] if task == "localize" else pick("min_objects"),
        "max_objects": d["max_objects"] if task == "localize" else pick("max_objects"),
    }
    if getattr(args, "small_input", False):
        s["model_kwargs"]["small_input"] = True
    if s["backbone_weights"] is not None and not Path(s["backbone_weights"]).exists():
        raise UsageError(
            f"--backbone-weights {s['backbone_weights']}: no such run folder or file; give a "
            "`cnnkit train --task classify` run folder (its best.safetensors) or a weights file"
        )
    for key in ("canvas", "train_images", "epochs", "batch_size", "head_width"):
        if not isinstance(s[key], int) or s[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be a positive integer, got {s[key]!r}")
    if not s["lr"] > 0:
        raise UsageError(f"--lr must be > 0, got {s['lr']!r}")
    low, high = s["item_sizes"]
    if not 4 <= low <= high <= s["canvas"]:
        raise UsageError(f"--item-sizes {low},{high} must satisfy 4 <= MIN <= MAX <= canvas ({s['canvas']})")
    return s


def scenes_config(s: dict[str, Any]) -> FashionScenes:
    try:
        return FashionScenes(
            split="train",
            num_images=s["train_images"],
            canvas=s["canvas"],
            min_objects=s["min_objects"],
            max_objects=s["max_objects"],
            min_size=s["item_sizes"][0],
            max_size=s["item_sizes"][1],
            clutter=s["clutter"],
            noise=s["noise"],
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def prepare(
    args: argparse.Namespace, task: str
) -> tuple[dict[str, Any], TaskData, torch.device, Path, torch.Generator]:
    """Settings, data, device, run folder and batch-order generator of a localize / detect run."""
    from ...engine.device import pick_device
    from ...engine.perf import pick_perf_settings, set_threads, tune_cpu_allocator
    from ...models import model_entry

    s = settings(args, task)
    model_entry(s["model"])  # fail fast, with close matches
    device = pick_device(getattr(args, "device", None))
    perf = pick_perf_settings(device)
    tune_cpu_allocator(device)
    # On a shared machine, threads that wait for busy cores stall every op (train/perf.py);
    # an explicit OMP_NUM_THREADS is the user's choice and wins.
    if "OMP_NUM_THREADS" not in os.environ:
        set_threads(perf.num_threads)
    s["amp"], s["threads"] = perf.amp, torch.get_num_threads()
    generator = runs.seed_all(s["seed"])
    out = Path(getattr(args, "out", None) or runs.default_run_dir(task, s["model"]))
    print(f"run folder: {out}", file=sys.stderr)
    data = load_task_data(
        s["data"],
        image_size=s["canvas"],
        in_chans=1
        if s["data"] in ("fashion-scenes", "fashion-mnist", "fashion_mnist", "fashion", "scenes")
        else 3,
        scenes=scenes_config(s),
        num_val=VAL_IMAGES,
        num_test=TEST_IMAGES,
        limit_train=s["limit_train"],
        limit_test=s["limit_test"],
        seed=s["seed"],
    )
    print(
        f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images, "
        f"{len(data.train.boxes)} training objects",
        file=sys.stderr,
    )
    return s, data, device, out, generator


def build_backbone(s: dict[str, Any], in_chans: int) -> torch.nn.Module:
    """The run's backbone without its classifier, started from ``--backbone-weights`` if given.

    Raises:
        UsageError: the model options do not fit the model, or the weights do not fit the backbone.
    """
    from ...io.weights import WeightsError
    from ...models import create_model
    from ...models.surgery import load_backbone_weights

    try:
        backbone = create_model(s["model"], num_classes=0, in_chans=in_chans, **s["model_kwargs"])
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--model {s['model']} with options {s['model_kwargs']}: {exc}") from None
    if s["backbone_weights"] is not None:
        try:
            load_backbone_weights(backbone, s["backbone_weights"])
        except (WeightsError, FileNotFoundError) as exc:
            model = f"--model {s['model']} {s['model_kwargs']}"
            raise UsageError(f"--backbone-weights ({model}): {exc}") from None
    return backbone


def run_config(
    task: str, s: dict[str, Any], data: TaskData, in_chans: int, head: dict[str, Any]
) -> dict[str, Any]:
    """The config.json record (completed with results after training)."""
    return {
        "task": task,
        "model": s["model"],
        "model_kwargs": s["model_kwargs"],
        "backbone_weights": None if s["backbone_weights"] is None else str(s["backbone_weights"]),
        "in_chans": in_chans,
        "image_size": s["canvas"],
        "class_names": list(data.train.class_names),
        "head": head,
        "data": data.record,
        "train": {
            k: s.get(k)
            for k in ("epochs", "batch_size", "lr", "seed", "patience", "limit_train", "limit_test")
            + ("amp", "threads")
        },
        "optimizer": "adamw",
        **runs.environment(),
    }


def train_main(args: argparse.Namespace) -> int:
    """Train a detector and write the run folder; prints the test mAP."""
    from torchvision.ops import box_convert

    from .anchors import anchor_fit, kmeans_anchors, split_by_level
    from .draw import draw_detections, grid, save_png
    from .loss import YoloLoss
    from .model import YoloDetector
    from .train import evaluate_detector, fit_detector, predict_detector, print_epoch

    wall = time.perf_counter()
    strides = _parse_strides(getattr(args, "strides", None) or "8")
    per_level = getattr(args, "anchors", None) or 3
    if per_level < 1:
        raise UsageError(f"--anchors must be >= 1, got {per_level}")
    s, data, device, out, _ = prepare(args, "detect")
    wh = box_convert(data.train.boxes, "xyxy", "cxcywh")[:, 2:]
    try:
        anchors = kmeans_anchors(wh, per_level * len(strides), seed=s["seed"])
    except ValueError as exc:
        raise UsageError(f"cannot compute anchors from the training boxes: {exc}; lower --anchors") from None
    levels = split_by_level(anchors, len(strides))
    fit = anchor_fit(wh, anchors)
    print(
        f"anchors (w, h): {[[round(v, 1) for v in a] for a in anchors.tolist()]}, mean best IoU {fit:.3f}",
        file=sys.stderr,
    )

    in_chans = int(data.train.images.shape[1])
    backbone = build_backbone(s, in_chans)
    head = {"strides": list(strides), "width": s["head_width"], "depth": 2}
    model = YoloDetector(backbone, data.train.num_classes, in_chans, s["canvas"], levels, **head)
    config = run_config("detect", s, data, in_chans, head)
    config["anchors"] = [level.tolist() for level in levels]
    config["anchor_fit"] = fit
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / runs.CONFIG_FILE, config)

    loss_fn = YoloLoss(levels, strides)
    result = fit_detector(
        model,
        loss_fn,
        data.train,
        data.val,
        epochs=s["epochs"],
        batch_size=s["batch_size"],
        lr=s["lr"],
        device=device,
        patience=s["patience"],
        amp=s["amp"],
        seed=s["seed"],
        on_epoch_end=print_epoch,
    )
    runs.save_run_weights(model, out, config)
    test = evaluate_detector(model, data.test, device, class_metrics=True)
    names = data.test.class_names
    test["ap_per_class"] = {names[k]: v for k, v in test["ap_per_class"].items()}
    metrics = {
        "test": test,
        "test_images": len(data.test),
        "best_epoch": result["best_epoch"],
        "epochs_run": result["epochs_run"],
        "train_seconds": round(result["train_seconds"], 1),
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "history": result["history"],
    }
    runs.write_json(out / runs.METRICS_FILE, metrics)
    config["results"] = {k: metrics[k] for k in ("best_epoch", "epochs_run", "train_seconds", "wall_seconds")}
    runs.write_json(out / runs.CONFIG_FILE, config)

    shown = list(range(min(8, len(data.test))))
    detections = predict_detector(
        model, data.test.images[shown], device, score_threshold=0.3, class_agnostic=True
    )
    pictures = [
        draw_detections(
            data.test.images[i],
            d["boxes"],
            d["labels"],
            names,
            d["scores"],
            truth=data.test.target(i)["boxes"],
        )
        for i, d in zip(shown, detections)
    ]
    if pictures:
        save_png(grid(pictures), out / runs.SAMPLES_FILE)
    print(
        f"test mAP@0.5 {test['map_50']:.3f}, mAP@[.5:.95] {test['map']:.3f} on {len(data.test)} images "
        f"after {result['epochs_run']} epochs (best {result['best_epoch']}, {metrics['train_seconds']:.0f} s "
        f"of training, {metrics['wall_seconds']:.0f} s in all); run folder: {out}"
    )
    return 0
