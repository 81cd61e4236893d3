"""YOLO box coding: a box as its grid cell, offsets inside the cell and size relative to an anchor.

For a box with centre (cx, cy) and size (w, h), at a level of stride ``s``, with anchor (aw, ah):

    gx, gy = floor(cx / s), floor(cy / s)                 # the cell responsible for the box
    offsets = (cx / s - gx, cy / s - gy, log(w / aw), log(h / ah))

and decoding inverts it: ``cx = (gx + ox) * s``, ``w = aw * exp(ow)``. The network's raw outputs
become offsets through ``activate`` (a widened sigmoid for the centre, so that the cell edges are
reachable; a clamped identity for the log-sizes, so that ``exp`` cannot overflow).
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert

# YOLOv4's scale_x_y: sigmoid stretched to (-0.1, 1.1) so offsets 0 and 1 are not asymptotes.
XY_SCALE = 1.2
# exp(4) = 55: no box is more than 55 times its anchor.
MAX_LOG_SIZE = 4.0


def cells_of(boxes: torch.Tensor, stride: int, grid: tuple[int, int]) -> torch.Tensor:
    """Cell (gx, gy) holding each box centre: Tensor[M, 4] ``xyxy`` -> int64 Tensor[M, 2].

    Centres on the far image edge are put in the last cell.
    """
    centre = box_convert(boxes, "xyxy", "cxcywh")[:, :2]
    cells = torch.floor(centre / stride).long()
    limit = torch.tensor([grid[1] - 1, grid[0] - 1], device=boxes.device)
    return torch.minimum(cells.clamp_min(0), limit)


def encode(boxes: torch.Tensor, cells: torch.Tensor, anchors: torch.Tensor, stride: int) -> torch.Tensor:
    """Boxes -> offsets.

    Args:
        boxes: Tensor[M, 4] ``xyxy`` pixels.
        cells: Tensor[M, 2] (gx, gy) of the responsible cell (see ``cells_of``).
        anchors: Tensor[M, 2] (w, h) of the responsible anchor, pixels.
        stride: the level's stride.

    Returns:
        Tensor[M, 4] offsets (ox, oy, log w/aw, log h/ah).
    """
    cxcywh = box_convert(boxes, "xyxy", "cxcywh")
    xy = cxcywh[:, :2] / stride - cells.to(boxes.dtype)
    wh = torch.log(cxcywh[:, 2:] / anchors.to(boxes.dtype))
    return torch.cat([xy, wh], dim=1)


def decode(offsets: torch.Tensor, cells: torch.Tensor, anchors: torch.Tensor, stride: int) -> torch.Tensor:
    """Offsets -> boxes; the inverse of ``encode``. Shapes broadcast: Tensor[..., 4] -> Tensor[..., 4]."""
    xy = (cells.to(offsets.dtype) + offsets[..., :2]) * stride
    wh = anchors.to(offsets.dtype) * torch.exp(offsets[..., 2:])
    return box_convert(torch.cat([xy, wh], dim=-1), "cxcywh", "xyxy")


def activate(raw: torch.Tensor) -> torch.Tensor:
    """Raw box outputs Tensor[..., 4] -> offsets Tensor[..., 4] (see the module docstring)."""
    xy = XY_SCALE * torch.sigmoid(raw[..., :2]) - (XY_SCALE - 1) / 2
    wh = raw[..., 2:].clamp(-MAX_LOG_SIZE, MAX_LOG_SIZE)
    return torch.cat([xy, wh], dim=-1)


def grid_cells(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """(gx, gy) of every cell: int64 Tensor[height, width, 2]."""
    gy, gx = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    return torch.stack([gx, gy], dim=-1)
