"""Regenerate the figures of docs/segmentation.md from finished run folders.

    python docs/figures/segmentation/make_figures.py --semantic RUN_32S RUN_16S RUN_8S RUN_UNET \
        --instance RUN_MASKRCNN --out docs/figures/segmentation

Writes ``compare.png`` (test scenes: image, truth, then each semantic run's prediction),
``instances.png`` (Mask R-CNN detections on the same scenes) and ``inputs/scene_<k>.png`` (two
test scenes as image files, for the `cnnkit segment` example). The test scenes are the runs'
own FashionScenes test split (from the cache), so the pictures show images no run trained on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from cnnkit.data.masks import MaskDataset, default_palette
from cnnkit.engine.device import pick_device
from cnnkit.runs.segment import load_segment_run
from cnnkit.tasks.segmentation.data import DEFAULT_SCENES, DEFAULT_SIZES
from cnnkit.tasks.segmentation.instance import to_model_inputs
from cnnkit.tasks.segmentation.overlay import blend, instance_label_map, legend_handles


def _test_scenes(record: dict) -> object:
    size = record["run"].get("limit_test") or DEFAULT_SIZES["test"]
    return DEFAULT_SCENES.replace(split="test", num_images=size).load()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--semantic", nargs="+", required=True, help="FCN / U-Net run folders")
    parser.add_argument("--instance", help="a Mask R-CNN run folder")
    parser.add_argument("--out", default="docs/figures/segmentation")
    parser.add_argument("--images", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)

    runs = [load_segment_run(r, device) for r in args.semantic]
    scenes = _test_scenes(runs[0][1])
    data = MaskDataset.from_scenes(scenes)
    index = args.images
    names = data.class_names
    palette = default_palette(len(names))
    images = data.images[index]
    columns = [("image", None), ("truth", data.masks[index])]
    for model, record in runs:
        with torch.inference_mode():
            pred = model(images.to(device).float() / 255).argmax(1).cpu()
        columns.append((f"{record['head']} ({record['model']})", pred))

    fig, axes = plt.subplots(len(index), len(columns), figsize=(1.6 * len(columns) + 1.8, 1.6 * len(index)))
    for row in range(len(index)):
        for col, (title, masks) in enumerate(columns):
            ax = axes[row, col]
            if masks is None:
                ax.imshow(images[row, 0], cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(blend(images[row], masks[row], palette), interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=7)
    fig.legend(
        handles=legend_handles(range(1, len(names)), names, palette),
        loc="center right",
        fontsize=7,
        frameon=False,
    )
    fig.subplots_adjust(left=0.01, right=0.84, top=0.95, bottom=0.01, wspace=0.05, hspace=0.05)
    fig.savefig(out / "compare.png", dpi=130)
    plt.close(fig)

    inputs = out / "inputs"
    inputs.mkdir(exist_ok=True)
    for k, i in enumerate(index[:2]):  # for `cnnkit segment` (see docs/segmentation.md)
        Image.fromarray(data.images[i, 0].numpy()).save(inputs / f"scene_{k}.png")

    if args.instance:
        model, record = load_segment_run(args.instance, device)
        with torch.inference_mode():
            detections = model(to_model_inputs(images, record["in_chans"], device))
            detections = [{k: v.cpu() for k, v in d.items()} for d in detections]
        fig, axes = plt.subplots(2, len(index), figsize=(1.6 * len(index) + 1.8, 3.4))
        for col, det in enumerate(detections):
            label_map, kept = instance_label_map(det["masks"], det["labels"], det["scores"])
            axes[0, col].imshow(blend(images[col], data.masks[index[col]], palette), interpolation="nearest")
            axes[1, col].imshow(blend(images[col], label_map, palette), interpolation="nearest")
            for (x1, y1, x2, y2), score, label in zip(
                det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()
            ):
                if score < 0.5:
                    continue
                axes[1, col].add_patch(
                    plt.Rectangle(
                        (x1 - 0.5, y1 - 0.5),
                        x2 - x1,
                        y2 - y1,
                        fill=False,
                        color=np.asarray(palette[label]) / 255,
                        linewidth=1,
                    )
                )
                axes[1, col].text(x1, y1 - 1, f"{score:.2f}", color="white", fontsize=5)
            for ax in axes[:, col]:
                ax.set_axis_off()
        axes[0, 0].set_title("truth", fontsize=7, loc="left")
        axes[1, 0].set_title(f"Mask R-CNN ({record['model']})", fontsize=7, loc="left")
        fig.legend(
            handles=legend_handles(range(1, len(names)), names, palette),
            loc="center right",
            fontsize=7,
            frameon=False,
        )
        fig.subplots_adjust(left=0.01, right=0.84, top=0.92, bottom=0.01, wspace=0.05)
        fig.savefig(out / "instances.png", dpi=130)
        plt.close(fig)


if __name__ == "__main__":
    main()
