"""Anchor boxes from the training boxes: k-means with 1 - IoU as the distance (YOLOv2).

scikit-learn's KMeans measures Euclidean distance, which lets large boxes dominate; YOLOv2
clusters box shapes by IoU instead, so we keep this short loop. IoU of two shapes is computed
by torchvision's ``box_iou`` on boxes centred at the origin.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou


def shape_iou(wh_a: torch.Tensor, wh_b: torch.Tensor) -> torch.Tensor:
    """IoU of box shapes placed on the same centre: Tensor[M, 2], Tensor[K, 2] -> Tensor[M, K]."""

    def centred(wh: torch.Tensor) -> torch.Tensor:
        return torch.cat([-wh / 2, wh / 2], dim=1)

    return box_iou(centred(wh_a.float()), centred(wh_b.float()))


def kmeans_anchors(wh: torch.Tensor, k: int, *, iterations: int = 300, seed: int = 0) -> torch.Tensor:
    """Cluster box shapes into ``k`` anchors.

    Args:
        wh: Tensor[M, 2], widths and heights of the training boxes (pixels).
        k: number of anchors.
        iterations: most assignment / update rounds (it stops earlier once stable).
        seed: seed of the k-means++ initialisation.

    Returns:
        Tensor[k, 2] anchor shapes sorted by area, smallest first.

    Raises:
        ValueError: fewer distinct box shapes than ``k``, or non-positive sizes.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    wh = wh.reshape(-1, 2).float()
    if len(wh) and float(wh.min()) <= 0:
        raise ValueError("box widths and heights must be > 0 to compute anchors")
    distinct = len(torch.unique(wh, dim=0))
    if distinct < k:
        raise ValueError(
            f"{k} anchors need at least {k} distinct box shapes; the training boxes have {distinct}"
        )
    gen = torch.Generator().manual_seed(seed)
    # k-means++: each next centre drawn with probability ~ its distance to the nearest centre.
    centres = wh[torch.randint(len(wh), (1,), generator=gen)]
    while len(centres) < k:
        dist = (1 - shape_iou(wh, centres)).min(dim=1).values
        weights = dist.clamp_min(0) + 1e-12
        centres = torch.cat([centres, wh[torch.multinomial(weights, 1, generator=gen)]])
    assign = torch.full((len(wh),), -1)
    for _ in range(iterations):
        new_assign = shape_iou(wh, centres).argmax(dim=1)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
        for j in range(k):
            members = wh[assign == j]
            if len(members):
                centres[j] = members.median(dim=0).values
            else:  # an emptied cluster restarts on the worst-fitting box
                centres[j] = wh[shape_iou(wh, centres).max(dim=1).values.argmin()]
    return centres[torch.argsort(centres.prod(dim=1))]


def split_by_level(anchors: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Small anchors to the fine (small-stride) levels: Tensor[K, 2] sorted by area -> ``levels`` parts.

    Raises:
        ValueError: ``K`` is not a multiple of ``levels``.
    """
    if len(anchors) % levels:
        raise ValueError(f"{len(anchors)} anchors cannot be shared equally by {levels} levels")
    return list(anchors[torch.argsort(anchors.prod(dim=1))].chunk(levels))


def anchor_fit(wh: torch.Tensor, anchors: torch.Tensor) -> float:
    """Mean over boxes of the best shape IoU with any anchor (YOLOv2's "Avg IOU")."""
    return float(shape_iou(wh.reshape(-1, 2), anchors.reshape(-1, 2)).max(dim=1).values.mean())
