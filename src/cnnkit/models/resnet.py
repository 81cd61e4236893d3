"""ResNet (He et al. 2015) and SE-ResNet (Hu et al. 2018): one class, variants from config.

The course builds ResNet-34 from residual units: two 3×3 convs with batch norm, added to the
input; when the shape changes (more maps, stride 2) the skip path is a 1×1 stride-2 conv + BN.
Deeper nets use bottleneck units (1×1 reduce, 3×3, 1×1 expand ×4). SENet adds a
squeeze-and-excitation block to every unit, so it is the same class with ``se_reduction`` set.

Module names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ``fc``), so its published state dicts load without conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..layers import SqueezeExcite
from ._base import Backbone, FeatureInfo, check_bool, check_num_classes, init_relu_weights
from ._registry import register_family

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "ResNetConfig"]


@dataclass(frozen=True)
class ResNetConfig:
    """What distinguishes one ResNet from another.

    Attributes:
        block: ``"basic"`` (two 3×3 convs, ResNet-18/34) or ``"bottleneck"`` (1×1-3×3-1×1,
            ResNet-50 and deeper).
        stage_depths: residual units in each of the four stages.
        se_reduction: None for a plain ResNet; otherwise every unit gets a squeeze-and-excitation
            block whose hidden layer is ``channels // se_reduction`` wide (SENet).
    """

    block: Literal["basic", "bottleneck"]
    stage_depths: tuple[int, int, int, int]
    se_reduction: int | None = None


RESNET_CONFIGS: dict[str, ResNetConfig] = {
    "resnet18": ResNetConfig("basic", (2, 2, 2, 2)),
    "resnet34": ResNetConfig("basic", (3, 4, 6, 3)),
    "resnet50": ResNetConfig("bottleneck", (3, 4, 6, 3)),
    "resnet101": ResNetConfig("bottleneck", (3, 4, 23, 3)),
    "resnet152": ResNetConfig("bottleneck", (3, 8, 36, 3)),
    "seresnet18": ResNetConfig("basic", (2, 2, 2, 2), se_reduction=16),
    "seresnet34": ResNetConfig("basic", (3, 4, 6, 3), se_reduction=16),
    "seresnet50": ResNetConfig("bottleneck", (3, 4, 6, 3), se_reduction=16),
    "seresnet101": ResNetConfig("bottleneck", (3, 4, 23, 3), se_reduction=16),
    "seresnet152": ResNetConfig("bottleneck", (3, 8, 36, 3), se_reduction=16),
}

STAGE_WIDTHS = (64, 128, 256, 512)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Skip path of a unit: identity when the shape is kept, else a 1×1 conv + BN."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class _Unit(nn.Module):
    """What every residual unit has: its convs (``_build``), an optional SE block and the
    projection of the skip path when the shape changes."""

    expansion: int

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, se_reduction: int | None = None
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self._build(in_channels, width, stride, out_channels)
        self.se = SqueezeExcite(out_channels, se_reduction) if se_reduction else nn.Identity()
        self.downsample = _projection(in_channels, out_channels, stride)

    def _build(self, in_channels: int, width: int, stride: int, out_channels: int) -> None:
        raise NotImplementedError


class BasicBlock(_Unit):
    """The course's residual unit: 3×3 conv-BN-ReLU, 3×3 conv-BN, add the skip path, ReLU.

    Args:
        in_channels: input maps.
        width: output maps (both convs).
        stride: stride of the first conv and of the projection.
        se_reduction: add a squeeze-and-excitation block before the addition (SENet).

    Shape:
        Tensor[N, in_channels, H, W] -> Tensor[N, width, ceil(H / stride), ceil(W / stride)].
    """

    expansion = 1

    def _build(self, in_channels: int, width: int, stride: int, out_channels: int) -> None:
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + self.downsample(x))


class Bottleneck(_Unit):
    """Bottleneck unit: 1×1 reduce to ``width``, 3×3 (carries the stride), 1×1 expand to 4×width.

    The stride sits on the 3×3 conv (torchvision's "ResNet v1.5"); the paper puts it on the
    first 1×1. Both have the same parameters; v1.5 is what the published weights were trained as.

    Args:
        in_channels: input maps.
        width: maps of the two inner convs; the output has ``4 * width``.
        stride: stride of the 3×3 conv and of the projection.
        se_reduction: add a squeeze-and-excitation block before the addition (SENet).

    Shape:
        Tensor[N, in_channels, H, W] -> Tensor[N, 4 * width, ceil(H / stride), ceil(W / stride)].
    """

    expansion = 4

    def _build(self, in_channels: int, width: int, stride: int, out_channels: int) -> None:
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + self.downsample(x))


class ResNet(Backbone):
    """ResNet / SE-ResNet: stem, four stages of residual units, global average pool, dense.

    Args:
        config: block type, units per stage and SE setting.
        num_classes: classifier outputs (0: no classifier, ``forward`` gives pooled features).
        in_chans: input channels.
        small_input: for 28×28 / 32×32 images: a 3×3 stride-1 stem conv and no stem max-pool, so
            the stages run at strides 1, 2, 4, 8 instead of 4, 8, 16, 32.

    Shape:
        input (Tensor[N, in_chans, H, W]) -> logits (Tensor[N, num_classes]).
    """

    def __init__(
        self,
        config: ResNetConfig,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
    ) -> None:
        super().__init__(num_classes=num_classes, in_chans=in_chans)
        block = {"basic": BasicBlock, "bottleneck": Bottleneck}[config.block]
        if small_input:
            self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        stem_stride = 1 if small_input else 2
        self.feature_info = [FeatureInfo("relu", 64, stem_stride)]

        channels, stride_so_far = 64, stem_stride * (1 if small_input else 2)  # after the max-pool
        stages = []
        for index, (width, depth) in enumerate(zip(STAGE_WIDTHS, config.stage_depths)):
            stride = 1 if index == 0 else 2
            units = []
            for unit in range(depth):
                units.append(block(channels, width, stride if unit == 0 else 1, config.se_reduction))
                channels = width * block.expansion
            stages.append(nn.Sequential(*units))
            stride_so_far *= stride
            self.feature_info.append(FeatureInfo(f"layer{index + 1}", channels, stride_so_far))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels
        self.fc: nn.Module = nn.Linear(channels, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes
        self.default_input = (in_chans, 28, 28) if small_input else (in_chans, 224, 224)
        init_relu_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, in_chans, H, W] -> Tensor[N, num_features, H / 32, W / 32] (/ 8 small)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tensor[N, num_features, h, w] -> logits Tensor[N, num_classes] (Tensor[N, num_features]
        with ``pre_logits``)."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        check_num_classes(num_classes)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes


def _build(name: str, num_classes: int, in_chans: int, small_input: bool) -> ResNet:
    return ResNet(
        RESNET_CONFIGS[name],
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=check_bool("small_input", small_input),
    )


_HE = "He et al. 2015, 'Deep Residual Learning for Image Recognition'"
_HU = "Hu et al. 2018, 'Squeeze-and-Excitation Networks'"


# name: (description for `cnnkit models`, docstring)
_VARIANTS: dict[str, tuple[str, str]] = {
    "resnet18": (
        f"ResNet-18 ({_HE}): basic units [2, 2, 2, 2]",
        "ResNet-18, 11,689,512 parameters. Arguments as in :class:`ResNet`.",
    ),
    "resnet34": (
        f"ResNet-34 ({_HE}): the course's ResNet-34, basic units [3, 4, 6, 3]",
        "ResNet-34 as the course builds it, 21,797,672 parameters. Arguments as in :class:`ResNet`.",
    ),
    "resnet50": (
        f"ResNet-50 ({_HE}): bottleneck units [3, 4, 6, 3]",
        "ResNet-50, 25,557,032 parameters. Arguments as in :class:`ResNet`.",
    ),
    "resnet101": (
        f"ResNet-101 ({_HE}): bottleneck units [3, 4, 23, 3]",
        "ResNet-101, 44,549,160 parameters. Arguments as in :class:`ResNet`.",
    ),
    "resnet152": (
        f"ResNet-152 ({_HE}): bottleneck units [3, 8, 36, 3]",
        "ResNet-152, 60,192,808 parameters. Arguments as in :class:`ResNet`.",
    ),
    "seresnet18": (
        f"SE-ResNet-18 ({_HU}): ResNet-18 with an SE block (reduction 16) in every unit",
        "SE-ResNet-18, 11,778,592 parameters. Arguments as in :class:`ResNet`.",
    ),
    "seresnet34": (
        f"SE-ResNet-34 ({_HU}): ResNet-34 with an SE block (reduction 16) in every unit",
        "SE-ResNet-34, 21,958,868 parameters. Arguments as in :class:`ResNet`.",
    ),
    "seresnet50": (
        f"SE-ResNet-50 ({_HU}): ResNet-50 with an SE block (reduction 16) in every unit",
        "SE-ResNet-50, 28,088,024 parameters. Arguments as in :class:`ResNet`.",
    ),
    "seresnet101": (
        f"SE-ResNet-101 ({_HU}): ResNet-101 with an SE block (reduction 16) in every unit",
        "SE-ResNet-101, 49,326,872 parameters. Arguments as in :class:`ResNet`.",
    ),
    "seresnet152": (
        f"SE-ResNet-152 ({_HU}): ResNet-152 with an SE block (reduction 16) in every unit",
        "SE-ResNet-152, 66,821,848 parameters. Arguments as in :class:`ResNet`.",
    ),
}


# The public builders, in _VARIANTS' order (a test checks each name).
(
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    seresnet18,
    seresnet34,
    seresnet50,
    seresnet101,
    seresnet152,
) = register_family(_build, _VARIANTS, input_size=(3, 224, 224))
