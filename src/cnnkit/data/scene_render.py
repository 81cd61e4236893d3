"""Drawing one FashionScene: real items scaled, placed with bounded overlap, clutter and noise.

``FashionScenes`` (data/scenes.py) holds the parameters, the splits and the cache; this module
draws the pixels, boxes and masks of one scene from its own seeded generators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from .scenes import FashionScenes

# Bump when the generator's output changes for the same parameters (invalidates the cache).
GENERATOR_VERSION = 2
_SPLIT_SEED = {"train": 0, "val": 1, "test": 2}
_MAX_TRIES = 50


def _scaled_item(item: np.ndarray, size: int) -> np.ndarray:
    # Pillow's bilinear filter antialiases when shrinking and is the same on every platform.
    return np.asarray(Image.fromarray(item).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def render_scene(
    cfg: FashionScenes, index: int, items: np.ndarray, item_labels: np.ndarray
) -> tuple[np.ndarray, list[torch.Tensor], list[int], list[np.ndarray]]:
    side = cfg.canvas
    # One stream per image and purpose: image i does not depend on how many images there are,
    # and turning clutter or noise on leaves the objects (boxes, masks) as they were.
    key = [cfg.seed, _SPLIT_SEED[cfg.split], GENERATOR_VERSION, index]
    rng, clutter_rng, noise_rng = (np.random.default_rng([*key, purpose]) for purpose in range(3))
    while True:  # redraw the whole image in the rare case min_objects could not be placed
        canvas = np.zeros((side, side), dtype=np.float32)
        for _ in range(cfg.clutter):
            _add_clutter(canvas, clutter_rng, items, cfg)
        wanted = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        boxes: list[torch.Tensor] = []
        labels: list[int] = []
        masks: list[np.ndarray] = []
        for _ in range(wanted):
            placed = _place_item(canvas, rng, items, item_labels, cfg, boxes)
            if placed is None:
                break
            box, label, mask = placed
            boxes.append(box)
            labels.append(label)
            masks.append(mask)
        if len(boxes) >= cfg.min_objects:
            break
    if cfg.noise > 0:
        canvas += noise_rng.normal(0.0, cfg.noise, canvas.shape).astype(np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), boxes, labels, masks


def _place_item(
    canvas: np.ndarray,
    rng: np.random.Generator,
    items: np.ndarray,
    item_labels: np.ndarray,
    cfg: FashionScenes,
    placed: list[torch.Tensor],
) -> tuple[torch.Tensor, int, np.ndarray] | None:
    side = cfg.canvas
    existing = torch.stack(placed) if placed else None
    for _ in range(_MAX_TRIES):
        idx = int(rng.integers(len(items)))
        size = int(rng.integers(cfg.min_size, cfg.max_size + 1))
        item = _scaled_item(items[idx], size)
        item_mask = item > cfg.mask_threshold
        if not item_mask.any():
            continue
        y0 = int(rng.integers(0, side - size + 1))
        x0 = int(rng.integers(0, side - size + 1))
        mask = np.zeros((side, side), dtype=bool)
        mask[y0 : y0 + size, x0 : x0 + size] = item_mask
        mask_t = torch.from_numpy(mask)
        from torchvision.ops import masks_to_boxes  # imported here: `import cnnkit.data` stays light

        # masks_to_boxes gives the last pixel's index; +1 turns it into the pixel edge.
        box = masks_to_boxes(mask_t[None])[0] + torch.tensor([0.0, 0.0, 1.0, 1.0])
        if existing is not None and _overlap(box, existing) > cfg.max_overlap:
            continue
        region = canvas[y0 : y0 + size, x0 : x0 + size]
        # Mask pixels replace what is below (painter's order); the faint rim blends by max.
        np.copyto(region, np.where(item_mask, item, np.maximum(region, item)).astype(np.float32))
        return box, int(item_labels[idx]), mask
    return None


def _overlap(box: torch.Tensor, others: torch.Tensor) -> float:
    """Largest intersection / smaller area of ``box`` (Tensor[4]) and ``others`` (Tensor[K, 4])."""
    from torchvision.ops import box_area, box_iou

    iou = box_iou(box[None], others)[0]
    areas = box_area(others)
    area = box_area(box[None])[0]
    # From IoU = I / (A + B - I): I = IoU (A + B) / (1 + IoU).
    inter = iou * (area + areas) / (1 + iou)
    return float((inter / torch.minimum(areas, area)).max())


def _add_clutter(canvas: np.ndarray, rng: np.random.Generator, items: np.ndarray, cfg: FashionScenes) -> None:
    side = cfg.canvas
    size = int(rng.integers(cfg.min_size, cfg.max_size + 1))
    item = _scaled_item(items[int(rng.integers(len(items)))], size).astype(np.float32)
    piece = max(2, size // 3)
    py, px = (int(v) for v in rng.integers(0, size - piece + 1, size=2))
    fragment = item[py : py + piece, px : px + piece] * float(rng.uniform(0.4, 0.9))
    y0, x0 = (int(v) for v in rng.integers(0, side - piece + 1, size=2))
    region = canvas[y0 : y0 + piece, x0 : x0 + piece]
    np.maximum(region, fragment, out=region)
