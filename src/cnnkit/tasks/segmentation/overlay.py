"""Colour overlays of class masks on images, with a legend of the classes shown."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ...data.masks import IGNORE_INDEX, default_palette


def _rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 [C, H, W] (C = 1 or 3) or [H, W] -> uint8 [H, W, 3]."""
    pixels = np.asarray(image.cpu() if isinstance(image, torch.Tensor) else image)
    if pixels.ndim == 3 and pixels.shape[0] in (1, 3):
        pixels = pixels.transpose(1, 2, 0)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return pixels.astype(np.uint8)


def blend(
    image: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.55,
    background: int = 0,
) -> np.ndarray:
    """Paint each non-background pixel with its class colour, ``alpha`` opaque.

    Args:
        image: uint8 Tensor[C, H, W] or [H, W].
        mask: int Tensor[H, W] of class indices (``IGNORE_INDEX`` is painted white).
        palette: uint8 [K, 3] class colours.
        alpha: opacity of the class colour.
        background: class left unpainted.

    Returns:
        uint8 array [H, W, 3].
    """
    rgb = _rgb(image).astype(np.float32)
    labels = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).astype(np.int64)
    colours = np.zeros((256, 3), dtype=np.float32)
    colours[: len(palette)] = palette
    colours[IGNORE_INDEX] = 255
    painted = labels != background
    out = rgb.copy()
    out[painted] = (1 - alpha) * rgb[painted] + alpha * colours[labels[painted]]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def legend_handles(labels: Sequence[int], class_names: Sequence[str], palette: np.ndarray) -> list[Patch]:
    """One coloured patch per class index in ``labels`` (sorted, duplicates dropped)."""
    return [
        Patch(facecolor=palette[k] / 255.0, edgecolor="black", label=class_names[k])
        for k in sorted(set(int(v) for v in labels))
        if 0 <= k < len(class_names)
    ]


def save_overlay(
    path: str | os.PathLike[str],
    image: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    class_names: Sequence[str],
    *,
    palette: np.ndarray | None = None,
    title: str | None = None,
    background: int = 0,
) -> Figure:
    """Write the image, the image with its mask painted on, and a legend of the classes present.

    Args:
        path: destination PNG.
        image: uint8 Tensor[C, H, W].
        mask: int Tensor[H, W] of class indices.
        class_names: one name per class index.
        palette: uint8 [K, 3] (default ``default_palette``).
        title: figure title.
        background: class index left unpainted and out of the legend.
    """
    palette = default_palette(len(class_names)) if palette is None else palette
    labels = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
    present = [k for k in np.unique(labels) if k != background]
    h, w = labels.shape
    side = 3.0 * max(h, w) / max(h, w, 1)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 2.2, side + 0.4), constrained_layout=True)
    axes[0].imshow(_rgb(image), interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(blend(image, labels, palette, background=background), interpolation="nearest")
    axes[1].set_title("prediction", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    handles = legend_handles(present, class_names, palette)
    if handles:
        axes[1].legend(
            handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False
        )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def instance_label_map(
    masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, threshold: float = 0.5
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Class map and outlines from Mask R-CNN detections (higher scores drawn on top).

    Args:
        masks: float Tensor[D, 1, H, W] of mask probabilities.
        labels: int Tensor[D] (torchvision's: class + 1, 0 is background).
        scores: Tensor[D].
        threshold: minimum detection score; a pixel belongs to a mask above 0.5.

    Returns:
        int array [H, W] of labels (0 background) and the boolean mask of each kept detection.
    """
    h, w = masks.shape[-2:]
    out = np.zeros((h, w), dtype=np.int64)
    kept = []
    for d in torch.argsort(scores).tolist():  # lowest first, so the best ends on top
        if float(scores[d]) < threshold:
            continue
        m = (masks[d, 0] > 0.5).cpu().numpy()
        out[m] = int(labels[d])
        kept.append(m)
    return out, kept


def save_instance_overlay(
    path: str | os.PathLike[str],
    image: torch.Tensor | np.ndarray,
    detections: dict[str, torch.Tensor],
    class_names: Sequence[str],
    *,
    threshold: float = 0.5,
    title: str | None = None,
) -> Figure:
    """Like ``save_overlay`` for Mask R-CNN output: masks coloured by class, boxes and scores.

    Args:
        path: destination PNG.
        image: uint8 Tensor[C, H, W].
        detections: ``boxes`` Tensor[D, 4], ``labels`` Tensor[D], ``scores`` Tensor[D],
            ``masks`` Tensor[D, 1, H, W] (torchvision's output for one image).
        class_names: names with the background first (index = torchvision label).
        threshold: minimum score shown.
        title: figure title.
    """
    palette = default_palette(len(class_names))
    label_map, _ = instance_label_map(
        detections["masks"], detections["labels"], detections["scores"], threshold
    )
    fig = save_overlay(path, image, label_map, class_names, palette=palette, title=title)
    return fig
