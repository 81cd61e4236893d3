"""Xception (Chollet 2017): Inception's branches replaced by depthwise separable convolutions.

Entry flow (two plain convs, then three residual blocks that halve the size), middle flow
(eight residual blocks of three 728-map separable convs), exit flow (one more halving block and
two wide separable convs). It is built as keras.applications.Xception builds it, with cnnkit's
Keras-semantics layers ('same' padding as TensorFlow pads, Keras initialisers), so the
parameter count matches Keras' 22,910,480 (which includes the batch norms' moving statistics).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..layers import Conv2D, Dense, GlobalAvgPool2D, MaxPool2D, SeparableConv2D
from ._base import Backbone, FeatureInfo, check_bool, check_num_classes
from ._registry import register_model

__all__ = ["Xception", "XceptionBlock"]

MIDDLE_FLOW_BLOCKS = 8


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    # Keras defaults: epsilon 1e-3, moving average momentum 0.99 (PyTorch counts 1 - 0.99).
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class XceptionBlock(nn.Module):
    """Residual block of separable convs: [ReLU] → sep-conv 3×3 → BN, repeated, + skip path.

    With ``stride=2`` a 3×3 stride-2 max-pool ends the main path and the skip path is a 1×1
    stride-2 conv + BN; otherwise the skip path is the identity.

    Args:
        in_channels: input maps.
        widths: output maps of each separable conv.
        stride: 1 or 2.
        start_with_relu: begin with a ReLU (False for the first block: the stem just had one).

    Shape:
        Tensor[N, in_channels, H, W] -> Tensor[N, widths[-1], ceil(H / stride), ceil(W / stride)].
    """

    def __init__(
        self, in_channels: int, widths: tuple[int, ...], stride: int, start_with_relu: bool = True
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for index, width in enumerate(widths, 1):
            if index > 1 or start_with_relu:
                # Not in place: the skip path still needs the block's un-rectified input.
                layers[f"relu{index}"] = nn.ReLU()
            layers[f"sepconv{index}"] = SeparableConv2D(channels, width, 3, use_bias=False)
            layers[f"bn{index}"] = _batch_norm(width)
            channels = width
        if stride == 2:
            layers["pool"] = MaxPool2D(3, strides=2, padding="same")
        self.main = nn.Sequential(layers)
        if stride == 1 and channels == in_channels:
            self.skip: nn.Module = nn.Identity()
        else:
            self.skip = nn.Sequential(
                OrderedDict(
                    conv=Conv2D(channels, 1, strides=stride, padding="same", use_bias=False,
                                in_channels=in_channels),
                    bn=_batch_norm(channels),
                )
            )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.skip(x)


def _separable_bn_relu(in_channels: int, filters: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            sepconv=SeparableConv2D(in_channels, filters, 3, use_bias=False),
            bn=_batch_norm(filters),
            relu=nn.ReLU(inplace=True),
        )
    )


class Xception(Backbone):
    """Xception: ``entry_flow``, ``middle_flow``, ``exit_flow``, global average pool, dense.

    Args:
        num_classes: classifier outputs (0: ``forward`` gives the 2048 pooled features).
        in_chans: input channels.
        small_input: for 28×28 / 32×32 images: the two stem convs use stride 1 and 'same'
            padding (same parameters), so the stages run at strides 1, 2, 4, 8, 16 instead of
            2, 4, 8, 16, 32 (the Keras model needs at least 71×71 inputs).

    Shape:
        input (Tensor[N, in_chans, H, W]) -> logits (Tensor[N, num_classes]).
    """

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> None:
        super().__init__(num_classes=num_classes, in_chans=in_chans)
        stem_stride, stem_padding = (1, "same") if small_input else (2, "valid")
        stem = nn.Sequential(
            OrderedDict(
                conv1=Conv2D(32, 3, strides=stem_stride, padding=stem_padding, use_bias=False,
                             in_channels=in_chans),
                bn1=_batch_norm(32),
                relu1=nn.ReLU(inplace=True),
                conv2=Conv2D(64, 3, padding=stem_padding, use_bias=False, in_channels=32),
                bn2=_batch_norm(64),
                relu2=nn.ReLU(inplace=True),
            )
        )  # fmt: skip
        self.entry_flow = nn.Sequential(
            OrderedDict(
                stem=stem,
                block1=XceptionBlock(64, (128, 128), stride=2, start_with_relu=False),
                block2=XceptionBlock(128, (256, 256), stride=2),
                block3=XceptionBlock(256, (728, 728), stride=2),
            )
        )
        self.middle_flow = nn.Sequential(
            OrderedDict(
                (f"block{i + 1}", XceptionBlock(728, (728, 728, 728), stride=1))
                for i in range(MIDDLE_FLOW_BLOCKS)
            )
        )
        self.exit_flow = nn.Sequential(
            OrderedDict(
                block=XceptionBlock(728, (728, 1024), stride=2),
                conv1=_separable_bn_relu(1024, 1536),
                conv2=_separable_bn_relu(1536, 2048),
            )
        )
        self.global_pool = GlobalAvgPool2D()
        self.num_features = 2048
        self.fc: nn.Module = Dense(num_classes, in_features=2048) if num_classes else nn.Identity()
        self.num_classes = num_classes
        self.feature_info = [
            FeatureInfo("entry_flow.stem", 64, stem_stride),
            FeatureInfo("entry_flow.block1", 128, stem_stride * 2),
            FeatureInfo("entry_flow.block2", 256, stem_stride * 4),
            FeatureInfo("middle_flow", 728, stem_stride * 8),
            FeatureInfo("exit_flow", 2048, stem_stride * 16),
        ]
        side = 28 if small_input else 299
        self.default_input = (in_chans, side, side)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, in_chans, H, W] -> Tensor[N, 2048, ~H / 32, ~W / 32] (/ 16 small)."""
        return self.exit_flow(self.middle_flow(self.entry_flow(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tensor[N, 2048, h, w] -> logits Tensor[N, num_classes] (Tensor[N, 2048] with
        ``pre_logits``)."""
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        check_num_classes(num_classes)
        self.fc = Dense(num_classes, in_features=2048) if num_classes else nn.Identity()
        self.num_classes = num_classes


@register_model(
    input_size=(3, 299, 299),
    description="Xception (Chollet 2017, 'Xception: Deep Learning with Depthwise Separable "
    "Convolutions'): entry/middle/exit flows of separable convs",
)
def xception(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> Xception:
    """Xception as in keras.applications: 22,855,952 trainable parameters, 22,910,480 counting
    the batch norms' moving mean and variance as Keras does. Arguments as in :class:`Xception`.
    """
    return Xception(
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=check_bool("small_input", small_input),
    )
