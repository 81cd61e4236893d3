"""VGG (Simonyan & Zisserman 2014): stacks of 3×3 convs between 2×2 max-pools, then 3 dense layers.

Every variant is one layer list keyed by its model name; ``_bn`` variants put batch norm after
each conv. Module names follow torchvision's VGG (``features.<i>``, ``classifier.<i>``), so its
published state dicts load without conversion.
"""

from __future__ import annotations

from torch import nn

from ._base import DenseHeadCNN, FeatureInfo, check_bool, check_in_chans, check_num_classes, init_relu_weights
from ._registry import register_model

__all__ = ["VGG", "VGG_LAYERS"]

POOL = "pool"

# Columns A, B, D and E of the paper's Table 1: conv widths in order, POOL for a 2×2 max-pool.
VGG_LAYERS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg13": (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg16": (
        *(64, 64, POOL, 128, 128, POOL),
        *(256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL),
    ),
    "vgg19": (
        *(64, 64, POOL, 128, 128, POOL),
        *(256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL),
    ),
}

# The dense head was sized for 224×224 inputs (7×7 maps after five pools); adaptive pooling to
# 7×7 keeps it valid for any input size, as torchvision does.
HEAD_GRID = 7
HIDDEN_UNITS = 4096


class VGG(DenseHeadCNN):
    """VGG: ``features`` (convs, pools), adaptive average pool to 7×7, ``classifier`` (3 dense).

    Args:
        layers: conv widths and POOL markers, e.g. ``VGG_LAYERS["vgg16"]``.
        batch_norm: batch norm after every conv (the ``_bn`` variants).
        num_classes: classifier outputs (0: no last layer, ``forward`` gives the 4096 features).
        in_chans: input channels.
        small_input: for 28×28 / 32×32 images: the first max-pool becomes an identity, so the
            five stages run at strides 1, 2, 4, 8, 16 (five pools would shrink 28 pixels to 0).
            Module indices do not change, so published weights still load.

    Shape:
        input (Tensor[N, in_chans, H, W]) -> logits (Tensor[N, num_classes]); the features are
        Tensor[N, 512, H / 32, W / 32] (/ 16 with small_input), the pre-logits Tensor[N, 4096].
    """

    def __init__(
        self,
        layers: tuple[int | str, ...],
        *,
        batch_norm: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        modules: list[nn.Module] = []
        self.feature_info = []
        channels, stride = in_chans, 1
        for item in layers:
            if item == POOL:
                first_pool = not self.feature_info
                if small_input and first_pool:
                    modules.append(nn.Identity())
                else:
                    modules.append(nn.MaxPool2d(2, stride=2))
                    stride *= 2
                self.feature_info.append(FeatureInfo(f"features.{len(modules) - 1}", channels, stride))
            else:
                modules.append(nn.Conv2d(channels, int(item), 3, padding=1))
                if batch_norm:
                    modules.append(nn.BatchNorm2d(int(item)))
                modules.append(nn.ReLU(inplace=True))
                channels = int(item)
        self._set_head(modules, channels, HEAD_GRID, HIDDEN_UNITS, num_classes, dropout_first=False)
        self.default_input = (in_chans, 28, 28) if small_input else (in_chans, 224, 224)
        # He init lets the 16-19 layer plain nets train from scratch; the paper instead
        # initialised them from a trained 11-layer net A.
        init_relu_weights(self, linear_std=0.01)


def _build(name: str, num_classes: int, in_chans: int, small_input: bool) -> VGG:
    base, _, suffix = name.partition("_")
    return VGG(
        VGG_LAYERS[base],
        batch_norm=suffix == "bn",
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=check_bool("small_input", small_input),
    )


_PAPER = "Simonyan & Zisserman 2014, 'Very Deep Convolutional Networks for Large-Scale Image Recognition'"


@register_model(input_size=(3, 224, 224), description=f"VGG-11 ({_PAPER}): 8 convs + 3 dense")
def vgg11(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> VGG:
    """VGG-11 (configuration A), 132,863,336 parameters. Arguments as in :class:`VGG`."""
    return _build("vgg11", num_classes, in_chans, small_input)


@register_model(input_size=(3, 224, 224), description=f"VGG-13 ({_PAPER}): 10 convs + 3 dense")
def vgg13(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> VGG:
    """VGG-13 (configuration B), 133,047,848 parameters. Arguments as in :class:`VGG`."""
    return _build("vgg13", num_classes, in_chans, small_input)


@register_model(input_size=(3, 224, 224), description=f"VGG-16 ({_PAPER}): 13 convs + 3 dense")
def vgg16(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> VGG:
    """VGG-16 (configuration D), 138,357,544 parameters. Arguments as in :class:`VGG`."""
    return _build("vgg16", num_classes, in_chans, small_input)


@register_model(input_size=(3, 224, 224), description=f"VGG-19 ({_PAPER}): 16 convs + 3 dense")
def vgg19(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> VGG:
    """VGG-19 (configuration E), 143,667,240 parameters. Arguments as in :class:`VGG`."""
    return _build("vgg19", num_classes, in_chans, small_input)


@register_model(input_size=(3, 224, 224), description=f"VGG-11 with batch norm after every conv ({_PAPER})")
def vgg11_bn(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> VGG:
    """VGG-11 with batch norm, 132,868,840 parameters. Arguments as in :class:`VGG`."""
    return _build("vgg11_bn", num_classes, in_chans, small_input)


@register_model(input_size=(3, 224, 224), description=f"VGG-13 with batch norm after every conv ({_PAPER})")
def vgg13_bn(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> VGG:
    """VGG-13 with batch norm, 133,053,736 parameters. Arguments as in :class:`VGG`."""
    return _build("vgg13_bn", num_classes, in_chans, small_input)


@register_model(input_size=(3, 224, 224), description=f"VGG-16 with batch norm after every conv ({_PAPER})")
def vgg16_bn(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> VGG:
    """VGG-16 with batch norm, 138,365,992 parameters. Arguments as in :class:`VGG`."""
    return _build("vgg16_bn", num_classes, in_chans, small_input)


@register_model(input_size=(3, 224, 224), description=f"VGG-19 with batch norm after every conv ({_PAPER})")
def vgg19_bn(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> VGG:
    """VGG-19 with batch norm, 143,678,248 parameters. Arguments as in :class:`VGG`."""
    return _build("vgg19_bn", num_classes, in_chans, small_input)
