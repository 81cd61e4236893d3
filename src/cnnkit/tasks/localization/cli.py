"""`cnnkit train --task localize`: one class and one box per image (Géron 14.8)."""

from __future__ import annotations

import argparse
import time

from ..detection import runs
from ..detection.cli import _add_once, add_scene_arguments, build_backbone, prepare, run_config
from .loss import BOX_LOSSES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of --task localize (the common ones are `cnnkit train`'s)."""
    add_scene_arguments(parser)
    _add_once(
        parser, "--box-loss", choices=BOX_LOSSES, default="giou", help="localize: box loss (default giou)"
    )
    _add_once(
        parser,
        "--box-weight",
        type=float,
        metavar="W",
        help="localize: weight of the box loss (default: per loss)",
    )


def train_main(args: argparse.Namespace) -> int:
    """Train a Localizer and write the run folder; prints the test mean IoU and accuracy."""
    from ..detection.draw import draw_detections, grid, save_png
    from .model import Localizer
    from .train import evaluate_localizer, fit_localizer, predict_localizer, print_epoch

    wall = time.perf_counter()
    s, data, device, out, _ = prepare(args, "localize")
    box_loss = getattr(args, "box_loss", None) or "giou"
    box_weight = getattr(args, "box_weight", None)
    for part in (data.train, data.val, data.test):
        part.single_object()  # a clear DataError before training if an image has 0 or 2+ objects

    in_chans = int(data.train.images.shape[1])
    backbone = build_backbone(s, in_chans)
    head = {"width": s["head_width"]}
    model = Localizer(backbone, data.train.num_classes, in_chans, s["canvas"], **head)
    config = run_config("localize", s, data, in_chans, head)
    config["loss"] = {"box_loss": box_loss, "box_weight": box_weight}
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / runs.CONFIG_FILE, config)

    result = fit_localizer(
        model, data.train, data.val, epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"],
        device=device, box_loss=box_loss, box_weight=box_weight, patience=s["patience"], amp=s["amp"],
        seed=s["seed"], on_epoch_end=print_epoch,
    )  # fmt: skip
    runs.save_run_weights(model, out, config)
    test = evaluate_localizer(model, data.test, device)
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
    if shown:
        labels, scores, boxes = predict_localizer(model, data.test.images[shown], device)
        h, w = data.test.image_size
        pixels = boxes * boxes.new_tensor([w, h, w, h])
        pictures = [
            draw_detections(
                data.test.images[i], pixels[k : k + 1], labels[k : k + 1], data.test.class_names,
                scores[k : k + 1], truth=data.test.target(i)["boxes"],
            )
            for k, i in enumerate(shown)
        ]  # fmt: skip
        save_png(grid(pictures), out / runs.SAMPLES_FILE)
    print(
        f"test mean IoU {test['mean_iou']:.3f}, accuracy {test['accuracy']:.3f}, "
        f"accuracy at IoU>=0.5 {test['accuracy_iou50']:.3f} on {len(data.test)} images after "
        f"{result['epochs_run']} epochs (best {result['best_epoch']}, {metrics['train_seconds']:.0f} s of "
        f"training, {metrics['wall_seconds']:.0f} s in all); run folder: {out}"
    )
    return 0
