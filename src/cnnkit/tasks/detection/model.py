"""A YOLO-style single-stage detector on any cnnkit backbone (Géron 14.9, YOLOv2/v3 ideas).

Every cell of every level predicts, for each of its anchors, an objectness logit, four box
outputs (see ``coder``) and class logits. One forward pass, no region proposals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.ops import batched_nms, clip_boxes_to_image, nms, remove_small_boxes

from ...runtime.boxes import ArrayOps, DetectionOptions, select_with
from . import coder
from .blocks import ConvBNAct, FeatureLevels

# Objectness bias so that sigmoid(bias) = 0.01 at the start (RetinaNet's prior): the many empty
# cells then begin with a small loss instead of swamping the few objects.
OBJECTNESS_PRIOR = 0.01


class YoloDetector(nn.Module):
    """Backbone -> feature levels -> per-level conv head -> raw predictions.

    Args:
        backbone: a cnnkit Backbone (see ``cnnkit.create_model``).
        num_classes: object classes (no background class: objectness says "no object").
        in_chans: input channels.
        image_size: side of the square training images.
        anchors: one Tensor[A, 2] of anchor (w, h) in pixels per level, same A for all levels.
        strides: stride of each level, increasing; ``(8,)`` single-scale, ``(8, 16)`` two scales.
        width: channels of the head.
        depth: ConvBNAct layers in each level's head before the prediction layer.

    Shape:
        ``forward``: Tensor[N, in_chans, H, W] (floats 0..1) -> one Tensor[N, A, H/s, W/s, 5 + C]
        per level: (box outputs 0..3, objectness logit 4, class logits 5..).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        in_chans: int,
        image_size: int,
        anchors: Sequence[torch.Tensor],
        strides: Sequence[int] = (8,),
        width: int = 128,
        depth: int = 2,
    ) -> None:
        super().__init__()
        strides = tuple(int(s) for s in strides)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        if len(anchors) != len(strides):
            raise ValueError(f"{len(anchors)} anchor sets for {len(strides)} levels (strides {strides})")
        counts = {len(a) for a in anchors}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(f"every level needs the same number (>= 1) of anchors, got {sorted(counts)}")
        self.num_classes = num_classes
        self.strides = strides
        self.num_anchors = counts.pop()
        self.image_size = image_size
        for i, a in enumerate(anchors):
            self.register_buffer(
                f"anchors_{i}", torch.as_tensor(a, dtype=torch.float32).reshape(-1, 2).clone()
            )
        self.features = FeatureLevels(backbone, in_chans, image_size, strides, width)
        outputs = self.num_anchors * (5 + num_classes)
        self.heads = nn.ModuleList()
        for _ in strides:
            predict = nn.Conv2d(width, outputs, 1)
            with torch.no_grad():
                bias = predict.bias.view(self.num_anchors, 5 + num_classes)
                bias.zero_()
                bias[:, 4] = math.log(OBJECTNESS_PRIOR / (1 - OBJECTNESS_PRIOR))
            self.heads.append(nn.Sequential(*[ConvBNAct(width, width) for _ in range(depth)], predict))

    @property
    def backbone(self) -> nn.Module:
        return self.features.backbone

    @property
    def anchors(self) -> list[torch.Tensor]:
        """Tensor[A, 2] anchor sizes (pixels) of each level."""
        return [getattr(self, f"anchors_{i}") for i in range(len(self.strides))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for fmap, head in zip(self.features(x), self.heads):
            y = head(fmap)
            n, _, h, w = y.shape
            out.append(y.view(n, self.num_anchors, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2))
        return out

    def decode(self, outputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw level outputs -> every anchor's box, objectness logit and class logits.

        Returns:
            boxes (Tensor[N, K, 4], ``xyxy`` pixels), objectness (Tensor[N, K]) and class logits
            (Tensor[N, K, C]), K = anchors × cells over all levels.
        """
        boxes, objectness, classes = [], [], []
        for raw, stride, anchors in zip(outputs, self.strides, self.anchors):
            n, a, h, w, _ = raw.shape
            cells = coder.grid_cells(h, w, raw.device).view(1, 1, h, w, 2)
            decoded = coder.decode(
                coder.activate(raw[..., :4].float()), cells, anchors.view(1, a, 1, 1, 2), stride
            )
            boxes.append(decoded.reshape(n, -1, 4))
            objectness.append(raw[..., 4].reshape(n, -1).float())
            classes.append(raw[..., 5:].reshape(n, -1, self.num_classes).float())
        return torch.cat(boxes, 1), torch.cat(objectness, 1), torch.cat(classes, 1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, **options: Any) -> list[dict[str, torch.Tensor]]:
        """Detections per image after score filtering and non-maximum suppression.

        Args:
            x: Tensor[N, C, H, W] (floats 0..1).
            options: ``select_detections``'s (``score_threshold``, ``nms_iou``,
                ``max_detections``, ``pre_nms_top_k``, ``class_agnostic``).

        Returns:
            One ``{"boxes": Tensor[D, 4], "scores": Tensor[D], "labels": Tensor[D]}`` per image.
        """
        boxes, objectness, classes = self.decode(self(x))
        boxes = clip_boxes_to_image(boxes, tuple(x.shape[-2:]))
        return [select_detections(boxes[b], objectness[b], classes[b], **options) for b in range(len(x))]


TORCH_OPS = ArrayOps(
    best=lambda scores: tuple(scores.max(-1)),
    nonzero=lambda mask: torch.nonzero(mask, as_tuple=True),
    top_k=lambda scores, k: scores.topk(k).indices,
    sized=lambda boxes: remove_small_boxes(boxes, 1e-3),
    nms=nms,
    batched_nms=batched_nms,
)


def select_detections(
    boxes: torch.Tensor, objectness: torch.Tensor, class_logits: torch.Tensor, **options: Any
) -> dict[str, torch.Tensor]:
    """Score, filter and suppress one image's anchor predictions (``YoloDetector.predict``).

    The score of (anchor, class) is sigmoid(objectness) × softmax(class logits)[class]. Every
    (anchor, class) pair above the score threshold is a candidate, so an anchor torn between
    two classes offers both (as COCO evaluation expects); ``class_agnostic`` keeps only the
    best class per anchor and suppresses across classes, one box per object, for display.

    Args:
        boxes: Tensor[K, 4] ``xyxy`` boxes of all anchors.
        objectness: Tensor[K] objectness logits.
        class_logits: Tensor[K, C] class logits.
        options: ``cnnkit.runtime.boxes.DetectionOptions`` fields (``score_threshold``,
            ``nms_iou``, ``max_detections``, ``pre_nms_top_k``, ``class_agnostic``).

    Returns:
        ``{"boxes": Tensor[D, 4], "scores": Tensor[D], "labels": Tensor[D]}``, best first.
    """
    scores = torch.sigmoid(objectness)[:, None] * class_logits.softmax(-1)
    return select_with(TORCH_OPS, boxes, scores, DetectionOptions(**options))
