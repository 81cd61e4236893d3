"""`cnnkit detect RUN IMAGE...`: boxes of a detection (or localization) run on your images.

Each image is resized to the run's training size, run through the model, and its boxes are
scaled back to the image's own pixels. For every image one PNG with labelled boxes and scores
goes to --out (default RUN/detections) and one JSON line goes to stdout:
{"image": ..., "output": ..., "detections": [{"label", "class", "score", "box": [x1, y1, x2, y2]}]}.
Folders are searched for images; a file that cannot be read is reported on stderr and the rest
go on (exit code 1 at the end if any failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError, UsageError

if TYPE_CHECKING:
    import torch

HELP = "draw a detection run's boxes on images"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run folder of `cnnkit train --task detect` (or localize)")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files or folders (PNG, JPEG, ...)")
    p.add_argument("--out", help="folder for the annotated PNGs (default RUN/detections)")
    p.add_argument(
        "--score-threshold", type=float, default=0.3, help="hide boxes scoring lower, 0..1 (default 0.3)"
    )
    p.add_argument(
        "--nms-iou", type=float, default=0.5, help="IoU of suppression between boxes (default 0.5)"
    )
    p.add_argument(
        "--all-classes",
        action="store_true",
        help="keep every class scoring above the threshold on a box, as mAP evaluation counts them "
        "(default: each box's best class only, one box per object)",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.annotations import read_image, resize_for_model
    from ..data.image_io import find_images
    from ..engine.device import pick_device
    from ..runs.folder import load_run, read_run, require_task
    from ..tasks.detection.draw import draw_detections, save_png
    from ..tasks.detection.inputs import to_input

    run = read_run(args.run)
    require_task(run, "cnnkit detect", ("localize", "detect"))
    for flag, value in (("--score-threshold", args.score_threshold), ("--nms-iou", args.nms_iou)):
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"{flag} must be between 0 and 1, got {value}")
    device = pick_device(args.device)
    model, config = load_run(run, device)
    names, size, in_chans = config["class_names"], config["image_size"], config["in_chans"]
    out_dir = Path(args.out) if args.out else Path(args.run) / "detections"
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    failed = done = 0
    for path, problem in find_images(args.images):
        if problem is None:
            try:
                original = read_image(path, in_chans)
            except DataError as exc:
                problem = str(exc)
        if problem is not None:  # reported, and the other images go on (as predict and segment)
            print(f"cnnkit: skipped {path}: {problem}", file=sys.stderr)
            failed += 1
            continue
        height, width = original.shape[1:]
        x = to_input(torch.from_numpy(resize_for_model(original, size))[None], device)
        boxes, scores, labels = _predict(
            model, config["task"], x, args.score_threshold, args.nms_iou, args.all_classes
        )
        # Back from the model's size x size input to the image's own pixels.
        boxes = boxes * torch.tensor([width / size, height / size] * 2)
        picture = draw_detections(
            torch.from_numpy(original), boxes, labels, names, scores, scale=_scale(height, width)
        )
        target = out_dir / _unique_name(Path(path).stem, used)
        save_png(picture, target)
        record = {
            "image": str(path),
            "output": str(target),
            "detections": [
                {
                    "label": int(c),
                    "class": names[int(c)],
                    "score": round(float(s), 4),
                    "box": [round(float(v), 1) for v in b],
                }
                for b, s, c in zip(boxes, scores, labels)
            ],
        }
        print(json.dumps(record, ensure_ascii=False), flush=True)
        done += 1
    if failed:
        print(
            f"cnnkit: {failed} of {failed + done} input(s) could not be read (listed above)", file=sys.stderr
        )
        return 1
    return 0


def _predict(
    model: torch.nn.Module,
    task: str,
    x: torch.Tensor,
    threshold: float,
    nms_iou: float,
    all_classes: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes Tensor[D, 4] in model-input pixels, scores Tensor[D], labels Tensor[D]) on the CPU."""
    import torch

    with torch.no_grad():
        return _predict_boxes(model, task, x, threshold, nms_iou, all_classes)


def _predict_boxes(
    model: torch.nn.Module, task: str, x: torch.Tensor, threshold: float, nms_iou: float, all_classes: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if task == "localize":
        out = model(x)
        score, label = out.logits.softmax(1).max(1)
        boxes = out.boxes * x.shape[-1]
        keep = score >= threshold
        return boxes[keep].cpu(), score[keep].cpu(), label[keep].cpu()
    # By default one box per object, with its best class, for display; --all-classes keeps every
    # (box, class) pair above the threshold, as mAP evaluation does.
    det = model.predict(x, score_threshold=threshold, nms_iou=nms_iou, class_agnostic=not all_classes)[0]
    return det["boxes"].cpu(), det["scores"].cpu(), det["labels"].cpu()


def _scale(height: int, width: int) -> int:
    """Enlarge small images (Fashion-sized) so the labels are readable; big ones stay as they are."""
    return max(1, min(8, 384 // max(height, width, 1)))


def _unique_name(stem: str, used: set[str]) -> str:
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return name
