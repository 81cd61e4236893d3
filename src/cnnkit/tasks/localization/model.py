"""Classification + localization: one backbone, a class head and a box head (Géron 14.8)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torchvision.ops import box_convert

from ..detection.blocks import ConvBNAct, FeatureLevels, probe_backbone


class LocalizationOutput(NamedTuple):
    """What a Localizer returns, in training and in evaluation alike.

    Attributes:
        logits: Tensor[N, num_classes].
        boxes: Tensor[N, 4], ``xyxy`` as fractions 0..1 of the image width and height.
    """

    logits: torch.Tensor
    boxes: torch.Tensor


class Localizer(nn.Module):
    """Any cnnkit backbone with two heads: class logits and one normalised box per image.

    The backbone's feature map is brought to a ``grid`` × ``grid`` map of ``width`` channels
    (stride-2 ConvBNAct steps, or a stage of that stride, then adaptive pooling). The class head
    pools that map and the backbone's own feature map globally (average and max: position does
    not change the class), so a backbone started from a classifier feeds the class layer directly;
    the box head reads
    the flattened map (position is the answer) and predicts centre and size through a sigmoid,
    so that every box is valid and inside the image.

    Args:
        backbone: a cnnkit Backbone (see ``cnnkit.create_model``); its own classifier is unused.
        num_classes: classes to tell apart.
        in_chans: input channels.
        image_size: side of the square training images.
        width: channels of the head's feature map.
        grid: side of the map the box head reads.
        hidden: units of the box head's hidden layer.
        dropout: dropout before the class layer.

    Shape:
        Tensor[N, in_chans, H, W] (floats 0..1) -> LocalizationOutput.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        in_chans: int,
        image_size: int,
        width: int = 128,
        grid: int = 4,
        hidden: int = 256,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        _, final = probe_backbone(backbone, in_chans, image_size)
        stride = final.stride
        while image_size // (stride * 2) >= grid:
            stride *= 2
        self.features = FeatureLevels(backbone, in_chans, image_size, (stride,), width)
        self.mix = nn.Sequential(ConvBNAct(width, width), nn.AdaptiveAvgPool2d(grid))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(2 * (width + final.channels), num_classes)
        )
        self.box_head = nn.Sequential(
            nn.Flatten(), nn.Linear(width * grid * grid, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 4)
        )
        self.num_classes = num_classes

    @property
    def backbone(self) -> nn.Module:
        return self.features.backbone

    def forward(self, x: torch.Tensor) -> LocalizationOutput:
        levels, final = self.features.forward_with_final(x)
        fmap = self.mix(levels[0])
        pooled = torch.cat([m for f in (fmap, final) for m in (f.mean((2, 3)), f.amax((2, 3)))], dim=1)
        cxcywh = torch.sigmoid(self.box_head(fmap))
        boxes = box_convert(cxcywh, "cxcywh", "xyxy")
        return LocalizationOutput(self.classifier(pooled), boxes)
