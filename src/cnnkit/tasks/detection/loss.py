"""YOLO loss: which anchor answers for which box, then objectness, box and class terms."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, box_iou, generalized_box_iou_loss

from . import coder
from .anchors import shape_iou


@dataclass
class Assignment:
    """The positive anchors of one level: who answers for which ground-truth box.

    Attributes:
        batch: Tensor[P] image index in the batch.
        anchor: Tensor[P] anchor index within the level.
        gy: Tensor[P] cell row.
        gx: Tensor[P] cell column.
        boxes: Tensor[P, 4] the ground-truth boxes (``xyxy`` pixels).
        labels: Tensor[P] their classes.
    """

    batch: torch.Tensor
    anchor: torch.Tensor
    gy: torch.Tensor
    gx: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor


def assign_targets(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    batch: torch.Tensor,
    anchors: list[torch.Tensor],
    strides: tuple[int, ...],
    grids: list[tuple[int, int]],
    match_iou: float = 0.5,
) -> list[Assignment]:
    """Assign every box to the cell holding its centre, on the anchors whose shape fits it.

    A box goes to its best-fitting anchor over all levels (YOLOv2/v3) and also to any other
    anchor whose shape IoU with it is at least ``match_iou`` (more positives, faster learning,
    as in YOLOv5). If two boxes claim the same anchor of the same cell, the first one keeps it.

    Args:
        boxes: Tensor[M, 4] ``xyxy`` pixels, all images of the batch.
        labels: Tensor[M] classes.
        batch: Tensor[M] image index of each box.
        anchors: Tensor[A, 2] per level.
        strides: stride per level.
        grids: (H, W) of each level's grid.
        match_iou: shape IoU that makes a non-best anchor positive too.

    Returns:
        One Assignment per level.
    """
    num_anchors = len(anchors[0])
    all_anchors = torch.cat(anchors).to(boxes.device)
    wh = box_convert(boxes, "xyxy", "cxcywh")[:, 2:]
    fit = shape_iou(wh, all_anchors) if len(boxes) else torch.zeros(0, len(all_anchors), device=boxes.device)
    positive = fit >= match_iou
    if len(boxes):
        positive[torch.arange(len(boxes)), fit.argmax(1)] = True
    result = []
    for level, (stride, grid) in enumerate(zip(strides, grids)):
        part = positive[:, level * num_anchors : (level + 1) * num_anchors]
        box_idx, anchor = torch.nonzero(part, as_tuple=True)
        cells = coder.cells_of(boxes[box_idx], stride, grid)
        gx, gy = cells[:, 0], cells[:, 1]
        b = batch[box_idx]
        # One box per (image, anchor, cell): keep the first claim (stable unique).
        key = ((b * num_anchors + anchor) * grid[0] + gy) * grid[1] + gx
        order = torch.argsort(key, stable=True)
        first = torch.ones_like(order, dtype=torch.bool)
        first[1:] = key[order][1:] != key[order][:-1]
        keep = order[first]
        result.append(
            Assignment(b[keep], anchor[keep], gy[keep], gx[keep], boxes[box_idx[keep]], labels[box_idx[keep]])
        )
    return result


class YoloLoss:
    """Objectness (binary cross-entropy on every anchor) + box (GIoU) + class (cross-entropy).

    All three are sums per image (averaged over the batch), so a positive anchor's box, class
    and objectness errors weigh about the same however many empty cells there are. The
    objectness target of a positive anchor is the IoU of its predicted box with the true one
    (YOLOv5), so that scores rank well-placed boxes first; empty anchors aim at 0.

    Args:
        anchors: Tensor[A, 2] per level (pixels).
        strides: stride per level.
        box_weight: weight of the GIoU term.
        objectness_weight: weight of the objectness term.
        class_weight: weight of the class term.
        match_iou: see ``assign_targets``.
    """

    def __init__(
        self,
        anchors: list[torch.Tensor],
        strides: tuple[int, ...],
        box_weight: float = 2.0,
        objectness_weight: float = 1.0,
        class_weight: float = 1.0,
        match_iou: float = 0.5,
    ) -> None:
        self.anchors = anchors
        self.strides = strides
        self.box_weight = box_weight
        self.objectness_weight = objectness_weight
        self.class_weight = class_weight
        self.match_iou = match_iou

    def __call__(
        self, outputs: list[torch.Tensor], boxes: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch.

        Args:
            outputs: the detector's raw levels, Tensor[N, A, H, W, 5 + C] each.
            boxes: Tensor[M, 4] ``xyxy`` pixels of all objects of the batch.
            labels: Tensor[M] classes.
            batch: Tensor[M] image index of each object.

        Returns:
            (total loss, {"box_loss", "objectness_loss", "class_loss"} per image, as floats).
        """
        n = outputs[0].shape[0]
        grids = [tuple(o.shape[2:4]) for o in outputs]
        anchors = [a.to(outputs[0].device) for a in self.anchors]
        assigned = assign_targets(boxes, labels, batch, anchors, self.strides, grids, self.match_iou)
        box_loss = outputs[0].new_zeros(())
        obj_loss = outputs[0].new_zeros(())
        cls_loss = outputs[0].new_zeros(())
        for raw, stride, level_anchors, pos in zip(outputs, self.strides, anchors, assigned):
            raw = raw.float()
            target = torch.zeros_like(raw[..., 4])
            if len(pos.batch):
                pred = raw[pos.batch, pos.anchor, pos.gy, pos.gx]
                cells = torch.stack([pos.gx, pos.gy], dim=1)
                pred_boxes = coder.decode(
                    coder.activate(pred[:, :4]), cells, level_anchors[pos.anchor], stride
                )
                box_loss = box_loss + generalized_box_iou_loss(pred_boxes, pos.boxes, reduction="sum")
                iou = box_iou(pred_boxes.detach(), pos.boxes).diagonal().clamp_min(0)
                target[pos.batch, pos.anchor, pos.gy, pos.gx] = iou.to(target.dtype)
                cls_loss = cls_loss + F.cross_entropy(pred[:, 5:], pos.labels, reduction="sum")
            obj_loss = obj_loss + F.binary_cross_entropy_with_logits(raw[..., 4], target, reduction="sum")
        box_loss, obj_loss, cls_loss = box_loss / n, obj_loss / n, cls_loss / n
        total = self.box_weight * box_loss + self.objectness_weight * obj_loss + self.class_weight * cls_loss
        parts = {
            "box_loss": float(box_loss.detach()),
            "objectness_loss": float(obj_loss.detach()),
            "class_loss": float(cls_loss.detach()),
        }
        return total, parts
