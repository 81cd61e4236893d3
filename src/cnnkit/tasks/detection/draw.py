"""Labelled boxes on images (torchvision's ``draw_bounding_boxes``), saved as PNG."""

from __future__ import annotations

import io
import os
from functools import cache

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import draw_bounding_boxes, make_grid

from ...fonts import has_hangul, korean_font
from ...io.atomic import atomic_write_bytes

# matplotlib's tab10 with its grey (index 7 there) moved last: ten colours that stay apart on a
# grey image.
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (127, 127, 127),
]  # fmt: skip
TRUTH_COLOUR = (255, 255, 255)


@cache
def _font(korean: bool = False) -> str | None:
    """A TrueType font for the labels: a Korean one where a label has Hangul and one is installed
    (it has Latin letters too), else matplotlib's DejaVu Sans (None: Pillow's default)."""
    try:
        from matplotlib import font_manager

        return (korean and korean_font()) or font_manager.findfont("DejaVu Sans", fallback_to_default=True)
    except (ImportError, ValueError):
        return None


def draw_detections(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    scores: torch.Tensor | None = None,
    truth: torch.Tensor | None = None,
    scale: int = 4,
) -> torch.Tensor:
    """Draw predicted boxes with "class score" labels (and, thin and white, the true boxes).

    Args:
        image: uint8 Tensor[C, H, W], C = 1 or 3.
        boxes: Tensor[D, 4] ``xyxy`` pixels of ``image``.
        labels: Tensor[D] class indices.
        class_names: names of the class indices.
        scores: Tensor[D] or None (no scores in the labels).
        truth: Tensor[K, 4] true boxes to draw under the predictions, or None.
        scale: enlarge small images this many times (nearest neighbour) so the text is readable.

    Returns:
        uint8 Tensor[3, H * scale, W * scale].
    """
    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
    if scale != 1:
        rgb = F.interpolate(rgb[None].float(), scale_factor=scale, mode="nearest")[0].round().to(torch.uint8)
    rgb = rgb.contiguous()
    size = max(10, 3 * scale)
    if truth is not None and len(truth):
        rgb = draw_bounding_boxes(rgb, truth.float() * scale, colors=TRUTH_COLOUR, width=1)
    if len(boxes):
        text = [
            class_names[int(c)] + ("" if scores is None else f" {float(s):.2f}")
            for c, s in zip(labels, scores if scores is not None else labels)
        ]
        font = _font(korean=any(has_hangul(t) for t in text))
        colours = [PALETTE[int(c) % len(PALETTE)] for c in labels]
        rgb = draw_bounding_boxes(
            rgb,
            boxes.float() * scale,
            labels=text,
            colors=colours,
            width=2,
            font=font,
            font_size=size,
            fill_labels=True,
            label_colors=(255, 255, 255),
        )
    return rgb


def grid(images: list[torch.Tensor], columns: int = 4) -> torch.Tensor:
    """uint8 Tensor[3, H, W] images (same size) -> one uint8 grid image with grey gutters."""
    return make_grid(torch.stack(images), nrow=columns, padding=4, pad_value=96)


def save_png(image: torch.Tensor, path: str | os.PathLike[str]) -> None:
    """Write a uint8 Tensor[3, H, W] as PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
