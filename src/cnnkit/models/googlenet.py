"""GoogLeNet (Szegedy et al. 2014): nine inception modules, optional auxiliary classifiers.

An inception module sends its input through four parallel branches (1×1; 1×1 then 3×3;
1×1 then a wider-window conv; 3×3 max-pool then 1×1) that all keep the spatial size, and
concatenates them along the channels. Module names and layers follow torchvision's GoogLeNet
(every conv is conv + batch norm + ReLU, the paper's LRNs are gone), so its published state
dicts load without conversion.

``forward`` always returns the main logits, in training and in evaluation. The auxiliary
classifiers (after inception4a and inception4d) are reached with ``forward_aux``, which returns
a :class:`GoogLeNetOutputs` in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._base import Backbone, FeatureInfo, check_bool, check_num_classes, init_relu_weights
from ._registry import register_model

__all__ = ["ConvBNReLU", "GoogLeNet", "GoogLeNetOutputs", "Inception", "InceptionAuxHead"]


class ConvBNReLU(nn.Module):
    """Conv (no bias: BN has one) + batch norm + ReLU; torchvision's ``BasicConv2d`` names.

    Shape: Tensor[N, in_channels, H, W] -> Tensor[N, out_channels, H_out, W_out].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        # eps as in the published weights (trained in TensorFlow, whose BN default is 1e-3).
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


@dataclass(frozen=True)
class InceptionSpec:
    """Widths of one inception module (a row of the paper's Table 1).

    Attributes:
        ch1x1: maps of the 1×1 branch.
        ch3x3_reduce: 1×1 maps before the 3×3 conv.
        ch3x3: maps of the 3×3 conv.
        ch5x5_reduce: 1×1 maps before the wide conv.
        ch5x5: maps of the wide conv.
        pool_proj: 1×1 maps after the 3×3 max-pool.
    """

    ch1x1: int
    ch3x3_reduce: int
    ch3x3: int
    ch5x5_reduce: int
    ch5x5: int
    pool_proj: int

    @property
    def out_channels(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj


INCEPTION_SPECS: dict[str, InceptionSpec] = {
    "inception3a": InceptionSpec(64, 96, 128, 16, 32, 32),
    "inception3b": InceptionSpec(128, 128, 192, 32, 96, 64),
    "inception4a": InceptionSpec(192, 96, 208, 16, 48, 64),
    "inception4b": InceptionSpec(160, 112, 224, 24, 64, 64),
    "inception4c": InceptionSpec(128, 128, 256, 24, 64, 64),
    "inception4d": InceptionSpec(112, 144, 288, 32, 64, 64),
    "inception4e": InceptionSpec(256, 160, 320, 32, 128, 128),
    "inception5a": InceptionSpec(256, 160, 320, 32, 128, 128),
    "inception5b": InceptionSpec(384, 192, 384, 48, 128, 128),
}


class Inception(nn.Module):
    """One inception module: four same-size branches concatenated along the channels.

    The "5×5" branch uses a 3×3 kernel, as torchvision's GoogLeNet and its published weights
    do (the paper's 5×5 would add 380,928 parameters to the 6,624,904).

    Args:
        in_channels: input maps.
        spec: branch widths.

    Shape:
        Tensor[N, in_channels, H, W] -> Tensor[N, spec.out_channels, H, W].
    """

    def __init__(self, in_channels: int, spec: InceptionSpec) -> None:
        super().__init__()
        # branch1..branch4 are torchvision's names (its state-dict keys).
        self.branch1 = ConvBNReLU(in_channels, spec.ch1x1, 1)
        self.branch2 = nn.Sequential(
            ConvBNReLU(in_channels, spec.ch3x3_reduce, 1),
            ConvBNReLU(spec.ch3x3_reduce, spec.ch3x3, 3, padding=1),
        )
        self.branch3 = nn.Sequential(
            ConvBNReLU(in_channels, spec.ch5x5_reduce, 1),
            ConvBNReLU(spec.ch5x5_reduce, spec.ch5x5, 3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            ConvBNReLU(in_channels, spec.pool_proj, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAuxHead(nn.Module):
    """Auxiliary classifier: 4×4 average pool, 1×1 conv 128, dense 1024, dropout 0.7, dense.

    Args:
        in_channels: maps of the inception module it reads (512 or 528).
        num_classes: outputs (0: stop at the 1024 features).

    Shape:
        Tensor[N, in_channels, H, W] -> Tensor[N, num_classes].
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = ConvBNReLU(in_channels, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.dropout = nn.Dropout(0.7)
        self.fc2: nn.Module = nn.Linear(1024, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


@dataclass
class GoogLeNetOutputs:
    """What ``GoogLeNet.forward_aux`` returns, in training and in evaluation alike.

    The paper trains on ``loss(logits) + 0.3 * sum(loss(a) for a in aux_logits)``.

    Attributes:
        logits: main classifier, Tensor[N, num_classes].
        aux_logits: the classifiers after inception4a and inception4d, each Tensor[N, num_classes].
    """

    logits: torch.Tensor
    aux_logits: tuple[torch.Tensor, torch.Tensor]


# ImageNet statistics that torchvision's published GoogLeNet weights expect to undo.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class GoogLeNet(Backbone):
    """GoogLeNet (Inception v1).

    Args:
        num_classes: classifier outputs (0: ``forward`` gives the 1024 pooled features).
        in_chans: input channels.
        small_input: for 28×28 / 32×32 images: conv1 is 3×3 stride 1 and the first max-pool is
            an identity, so the stages run at strides 1, 1, 2, 4, 8 instead of 2, 4, 8, 16, 32.
        aux_logits: build the two auxiliary classifiers (see ``forward_aux``).
        transform_input: map ImageNet-normalised RGB input to the [-1, 1] range the published
            weights were trained on (use it with torchvision's IMAGENET1K_V1 weights).

    Shape:
        input (Tensor[N, in_chans, H, W]) -> logits (Tensor[N, num_classes]).
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        aux_logits: bool = False,
        transform_input: bool = False,
    ) -> None:
        super().__init__(num_classes=num_classes, in_chans=in_chans)
        if aux_logits and not num_classes:
            raise ValueError("aux_logits=True needs num_classes >= 1: the auxiliary heads classify")
        if transform_input and in_chans != 3:
            raise ValueError(f"transform_input=True expects RGB input (in_chans=3), got in_chans={in_chans}")
        self.aux_logits = aux_logits
        self.transform_input = transform_input

        if small_input:
            self.conv1 = ConvBNReLU(in_chans, 64, 3, stride=1, padding=1)
            self.maxpool1: nn.Module = nn.Identity()
        else:
            self.conv1 = ConvBNReLU(in_chans, 64, 7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvBNReLU(64, 64, 1)
        self.conv3 = ConvBNReLU(64, 192, 3, padding=1)
        # ceil_mode gives the paper's sizes (112 -> 56 -> 28 -> 14 -> 7 on a 224 input).
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        # Names of the trunk's modules in call order (the modules themselves are attributes,
        # named as torchvision names them).
        self._trunk_order = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2"]
        channels = 192
        pools_after = {"inception3b": ("maxpool3", 3), "inception4e": ("maxpool4", 2)}
        for name, spec in INCEPTION_SPECS.items():
            setattr(self, name, Inception(channels, spec))
            self._trunk_order.append(name)
            channels = spec.out_channels
            if name in pools_after:
                pool_name, window = pools_after[name]
                setattr(self, pool_name, nn.MaxPool2d(window, stride=2, ceil_mode=True))
                self._trunk_order.append(pool_name)

        if aux_logits:
            self.aux1: InceptionAuxHead | None = InceptionAuxHead(512, num_classes)
            self.aux2: InceptionAuxHead | None = InceptionAuxHead(528, num_classes)
        else:
            self.aux1 = self.aux2 = None

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.4)  # the paper's 40 %
        self.num_features = channels
        self.fc: nn.Module = nn.Linear(channels, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes

        conv1_stride = 1 if small_input else 2
        conv3_stride = conv1_stride * (1 if small_input else 2)  # after maxpool1
        self.feature_info = [
            FeatureInfo("conv1", 64, conv1_stride),
            FeatureInfo("conv3", 192, conv3_stride),
            FeatureInfo("inception3b", 480, conv3_stride * 2),  # after maxpool2
            FeatureInfo("inception4e", 832, conv3_stride * 4),  # after maxpool3
            FeatureInfo("inception5b", 1024, conv3_stride * 8),  # after maxpool4
        ]
        side = 28 if small_input else 224
        self.default_input = (in_chans, side, side)
        init_relu_weights(self)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transform_input:
            return x
        mean = x.new_tensor(_IMAGENET_MEAN)[:, None, None]
        std = x.new_tensor(_IMAGENET_STD)[:, None, None]
        # Undo (x - mean) / std, then apply (x - 0.5) / 0.5.
        return (x * std + mean - 0.5) / 0.5

    def _run_trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Features plus the inception4a / inception4d outputs the auxiliary heads read."""
        taps = []
        x = self._normalise(x)
        for name in self._trunk_order:
            x = getattr(self, name)(x)
            if name in ("inception4a", "inception4d"):
                taps.append(x)
        return x, taps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, in_chans, H, W] -> Tensor[N, 1024, H / 32, W / 32] (/ 8 with small_input)."""
        return self._run_trunk(x)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tensor[N, 1024, h, w] -> logits Tensor[N, num_classes] (Tensor[N, 1024] with
        ``pre_logits``)."""
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward_aux(self, x: torch.Tensor) -> GoogLeNetOutputs:
        """Main and auxiliary logits from one pass, the same type in train and eval mode.

        Args:
            x: images, Tensor[N, in_chans, H, W].

        Raises:
            RuntimeError: if the model was built with ``aux_logits=False``.
        """
        if self.aux1 is None or self.aux2 is None:
            raise RuntimeError("this GoogLeNet has no auxiliary heads; build it with aux_logits=True")
        features, (tap4a, tap4d) = self._run_trunk(x)
        return GoogLeNetOutputs(self.forward_head(features), (self.aux1(tap4a), self.aux2(tap4d)))

    def reset_classifier(self, num_classes: int) -> None:
        """New main (and auxiliary) classifiers for ``num_classes`` (0: none)."""
        check_num_classes(num_classes)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        for head in (self.aux1, self.aux2):
            if head is not None:
                head.fc2 = nn.Linear(1024, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes


@register_model(
    input_size=(3, 224, 224),
    description="GoogLeNet (Szegedy et al. 2014, 'Going Deeper with Convolutions'): 9 inception "
    "modules, BN convs, optional auxiliary classifiers",
)
def googlenet(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    aux_logits: bool = False,
    transform_input: bool = False,
) -> GoogLeNet:
    """GoogLeNet, 6,624,904 parameters (13,004,888 with ``aux_logits=True``).

    torchvision's IMAGENET1K_V1 file also holds the (untrained) auxiliary heads: load it into a
    model built with ``aux_logits=True, transform_input=True``. Arguments as in :class:`GoogLeNet`.

    Raises:
        ValueError: ``aux_logits`` without classes, or ``transform_input`` without RGB input.
    """
    return GoogLeNet(
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=check_bool("small_input", small_input),
        aux_logits=check_bool("aux_logits", aux_logits),
        transform_input=check_bool("transform_input", transform_input),
    )
