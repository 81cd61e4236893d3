"""AlexNet (Krizhevsky et al. 2012): five convs, the first ones followed by local response norm.

``alexnet`` is the paper's network on one device (96-256-384-384-256 maps, LRN after conv1 and
conv2, 227×227 input); ``alexnet_tv`` is torchvision's single-tower variant (64-192-384-256-256,
no LRN), whose module names match torchvision's so its published weights load unchanged.
Both keep torchvision's layout: ``features.<i>``, ``avgpool``, ``classifier.<i>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ._base import DenseHeadCNN, FeatureInfo, check_bool
from ._registry import register_model

__all__ = ["ALEXNET_CONFIGS", "AlexNet", "AlexNetConfig"]


@dataclass(frozen=True)
class AlexNetConfig:
    """What distinguishes the paper's AlexNet from torchvision's.

    Attributes:
        conv_widths: output maps of conv1 to conv5.
        conv1_padding: zeros on each side for the 11×11 stride-4 conv1.
        local_response_norm: LRN after the ReLUs of conv1 and conv2.
    """

    conv_widths: tuple[int, int, int, int, int]
    conv1_padding: int
    local_response_norm: bool


ALEXNET_CONFIGS: dict[str, AlexNetConfig] = {
    # 227×227 input, no padding: (227 - 11) / 4 + 1 = 55, the paper's 55×55×96 first layer.
    "alexnet": AlexNetConfig((96, 256, 384, 384, 256), conv1_padding=0, local_response_norm=True),
    "alexnet_tv": AlexNetConfig((64, 192, 384, 256, 256), conv1_padding=2, local_response_norm=False),
}

HEAD_GRID = 6  # conv5 maps are 6×6 on a 227×227 (or torchvision's 224×224) input
HIDDEN_UNITS = 4096


def _local_response_norm() -> nn.Module:
    # The paper's constants: n = 5 neighbouring maps, alpha = 1e-4, beta = 0.75, k = 2.
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


class AlexNet(DenseHeadCNN):
    """AlexNet: ``features`` (5 convs, 3 overlapping 3×3/2 max-pools), adaptive pool, 3 dense.

    Args:
        config: widths, conv1 padding and LRN setting.
        num_classes: classifier outputs (0: no last layer, ``forward`` gives the 4096 features).
        in_chans: input channels.
        small_input: for 28×28 / 32×32 images: conv1 is 3×3 stride 1 (padding 1) and the first
            max-pool is an identity (module indices are kept), so a 28×28 input reaches the
            dense head as 6×6 maps.

    Shape:
        input (Tensor[N, in_chans, H, W]) -> logits (Tensor[N, num_classes]); the features are
        conv5's maps after the last pool, Tensor[N, C5, h, w], the pre-logits Tensor[N, 4096].
    """

    def __init__(
        self,
        config: AlexNetConfig,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
    ) -> None:
        super().__init__(num_classes=num_classes, in_chans=in_chans)
        w1, w2, w3, w4, w5 = config.conv_widths
        layers: list[nn.Module] = []
        self.feature_info = []

        def add_stage_end(channels: int, stride: int) -> None:
            self.feature_info.append(FeatureInfo(f"features.{len(layers) - 1}", channels, stride))

        if small_input:
            layers += [nn.Conv2d(in_chans, w1, 3, stride=1, padding=1), nn.ReLU(inplace=True)]
            stride = 1
        else:
            conv1 = nn.Conv2d(in_chans, w1, 11, stride=4, padding=config.conv1_padding)
            layers += [conv1, nn.ReLU(inplace=True)]
            stride = 4
        if config.local_response_norm:
            layers.append(_local_response_norm())
        add_stage_end(w1, stride)
        if small_input:
            layers.append(nn.Identity())
        else:
            layers.append(nn.MaxPool2d(3, stride=2))
            stride *= 2

        layers += [nn.Conv2d(w1, w2, 5, padding=2), nn.ReLU(inplace=True)]
        if config.local_response_norm:
            layers.append(_local_response_norm())
        add_stage_end(w2, stride)
        layers.append(nn.MaxPool2d(3, stride=2))
        stride *= 2

        layers += [
            *(nn.Conv2d(w2, w3, 3, padding=1), nn.ReLU(inplace=True)),
            *(nn.Conv2d(w3, w4, 3, padding=1), nn.ReLU(inplace=True)),
            *(nn.Conv2d(w4, w5, 3, padding=1), nn.ReLU(inplace=True)),
        ]
        add_stage_end(w5, stride)
        layers.append(nn.MaxPool2d(3, stride=2))
        add_stage_end(w5, stride * 2)

        self._set_head(layers, w5, HEAD_GRID, HIDDEN_UNITS, num_classes, dropout_first=True)
        side = 28 if small_input else (227 if config.conv1_padding == 0 else 224)
        self.default_input = (in_chans, side, side)


_PAPER = "Krizhevsky et al. 2012, 'ImageNet Classification with Deep Convolutional Neural Networks'"


@register_model(
    input_size=(3, 227, 227),
    description=f"AlexNet ({_PAPER}): one tower 96-256-384-384-256, LRN, dropout 0.5",
)
def alexnet(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> AlexNet:
    """The paper's AlexNet on one device, 62,378,344 parameters. Arguments as in :class:`AlexNet`.

    Weights start from PyTorch's default initialisation, as in torchvision, rather than the
    paper's N(0, 0.01) weights with unit biases.
    """
    return AlexNet(
        ALEXNET_CONFIGS["alexnet"],
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=check_bool("small_input", small_input),
    )


@register_model(
    input_size=(3, 224, 224),
    description=f"AlexNet, torchvision's variant ({_PAPER}; 64-192-384-256-256, no LRN)",
)
def alexnet_tv(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> AlexNet:
    """torchvision's AlexNet layout, 61,100,840 parameters; loads its published weights.

    Arguments as in :class:`AlexNet`.
    """
    return AlexNet(
        ALEXNET_CONFIGS["alexnet_tv"],
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=check_bool("small_input", small_input),
    )
