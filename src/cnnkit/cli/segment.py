"""`cnnkit segment RUN IMAGE...`: colour overlays of a segmentation run's predictions.

RUN is a folder written by `cnnkit train segment`. Each IMAGE (files or folders, walked
recursively) gets ``<out>/<name>_segment.png``: the image, and the image with every predicted
class painted in its colour, with a legend of the classes found. FCN and U-Net runs take images
of any size; Mask R-CNN runs draw the instances scoring at least --threshold. A file that cannot
be read is reported by name and skipped; the others are still segmented, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DataError, UsageError
from ._text import count

HELP = "paint a segmentation run's predictions on images"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN", help="a run folder of `cnnkit train segment`")
    p.add_argument("paths", metavar="IMAGE", nargs="+", help="image files or folders")
    p.add_argument("--out", default="segments", help="folder for the overlays (default segments/)")
    p.add_argument("--threshold", type=float, default=0.5, help="Mask R-CNN runs: minimum score (0.5)")
    p.add_argument("--save-masks", action="store_true", help="also write <name>_mask.png (palette PNG)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..data.image_io import find_images, load_image
    from ..data.masks import write_mask
    from ..engine.device import pick_device
    from ..tasks.segmentation.overlay import instance_label_map, save_overlay
    from ..viz.lang import figure_text

    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold}")
    from ..runs.folder import load_run, read_run, require_task

    run_info = read_run(args.run_dir)
    require_task(run_info, "cnnkit segment", ("segment",))
    device = pick_device(args.device)
    model, record = load_run(run_info, device)
    names = record["class_names"]
    instance = record["kind"] == "instance"
    channels = record["input_shape"][0]
    model_in = record.get("in_chans", channels)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path, problem in find_images(args.paths):
        if problem is None:
            try:
                pixels = load_image(path, channels=channels)
            except DataError as exc:
                problem = str(exc)
        if problem is not None:
            print(f"cnnkit: skipped {path}: {problem}", file=sys.stderr)
            failed += 1
            continue
        image = torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)
        with torch.inference_mode():
            if instance:
                from ..tasks.segmentation.instance import to_model_inputs

                detections = model(to_model_inputs(image[None], model_in, device))[0]
                detections = {k: v.cpu() for k, v in detections.items()}
                mask, kept = instance_label_map(
                    detections["masks"], detections["labels"], detections["scores"], args.threshold
                )
                summary = count(len(kept), "instance")
            else:
                x = image[None].to(device).float().div_(255.0)
                mask = model(x)[0].argmax(0).cpu().numpy()
                summary = count(int((np.unique(mask) != 0).sum()), "class", "classes")  # as listed
        target = out / f"{path.stem}_segment.png"
        title = figure_text(f"{record['model']} + {record['head']}: {path.name}")  # Korean file names too
        save_overlay(target, image, mask, [figure_text(n) for n in names], title=title)
        found = [names[k] for k in np.unique(mask) if k != 0]
        line = f"{path}: {summary} ({', '.join(found) or 'background only'}) -> {target}"
        if args.save_masks:
            write_mask(out / f"{path.stem}_mask.png", mask, len(names))
        print(line)
    return 1 if failed else 0
