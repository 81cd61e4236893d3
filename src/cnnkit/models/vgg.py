"""VGG (Simonyan & Zisserman 2014): stacks of 3×3 convs between 2×2 max-pools, then 3 dense layers.

Every variant is one layer list keyed by its model name; ``_bn`` variants put batch norm after
each conv. Module names follow torchvision's VGG (``features.<i>``, ``classifier.<i>``), so its
published state dicts load without conversion.
"""

from __future__ import annotations

from torch import nn

from ._base import DenseHeadCNN, FeatureInfo, check_bool, init_relu_weights
from ._registry import register_family

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
        super().__init__(num_classes=num_classes, in_chans=in_chans)
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
        # The dense layers: N(0, 0.01) weights and zero biases (as torchvision's VGG); convs below.
        self._set_head(
            modules, channels, HEAD_GRID, HIDDEN_UNITS, num_classes, dropout_first=False, linear_std=0.01
        )
        self.default_input = (in_chans, 28, 28) if small_input else (in_chans, 224, 224)
        # He init lets the 16-19 layer plain nets train from scratch; the paper instead
        # initialised them from a trained 11-layer net A.
        init_relu_weights(self)


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


# name: (title, parameters with 1000 classes); `cnnkit models` and the docstrings say them.
_COUNTS = {
    "vgg11": ("VGG-11 (configuration A)", 132_863_336),
    "vgg13": ("VGG-13 (configuration B)", 133_047_848),
    "vgg16": ("VGG-16 (configuration D)", 138_357_544),
    "vgg19": ("VGG-19 (configuration E)", 143_667_240),
    "vgg11_bn": ("VGG-11 with batch norm after every conv", 132_868_840),
    "vgg13_bn": ("VGG-13 with batch norm after every conv", 133_053_736),
    "vgg16_bn": ("VGG-16 with batch norm after every conv", 138_365_992),
    "vgg19_bn": ("VGG-19 with batch norm after every conv", 143_678_248),
}
_VARIANTS = {
    name: (
        f"{title} ({_PAPER}): {sum(x != POOL for x in VGG_LAYERS[name.split('_')[0]])} convs + 3 dense",
        f"{title}, {count:,} parameters. Arguments as in :class:`VGG`.",
    )
    for name, (title, count) in _COUNTS.items()
}


# The public builders, in _VARIANTS' order (a test checks each name).
(vgg11, vgg13, vgg16, vgg19, vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn) = register_family(
    _build, _VARIANTS, input_size=(3, 224, 224)
)
