"""LeNet-5 (LeCun et al. 1998), as the course presents it for 32×32 digits.

C1 conv 6@5×5 → S2 2×2 average pool → C3 conv 16@5×5 → S4 2×2 average pool → C5 conv 120@5×5
→ F6 dense 84 → output. Simplified from the paper the way the course does it: tanh instead of
the scaled tanh, plain average pooling instead of trainable subsampling, C3 connected to all six
S2 maps (the paper wires each C3 map to a subset), and a linear output layer instead of the RBF
units (softmax lives in the loss).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..layers import AvgPool2D, Conv2D, Dense, Flatten
from ._base import FeatureInfo, SequentialCNN, check_in_chans, check_num_classes
from ._registry import register_model

__all__ = ["lenet5"]

# MNIST / Fashion-MNIST images are 28×28; LeNet-5 pads them to 32×32 so that stroke ends and
# corners near the border can fall in the centre of the top detectors' receptive fields.
MNIST_PADDING = 2


@register_model(
    input_size=(1, 32, 32),
    description="LeNet-5 (LeCun et al. 1998, 'Gradient-Based Learning Applied to Document "
    "Recognition'): tanh convs, 2×2 average pools, 32×32×1",
)
def lenet5(*, num_classes: int = 10, in_chans: int = 1, small_input: bool = False) -> SequentialCNN:
    """LeNet-5, 61,706 parameters with 10 classes.

    Args:
        num_classes: outputs of the last layer (0: ``forward`` gives F6's 84 features).
        in_chans: input channels.
        small_input: take 28×28 images (MNIST, Fashion-MNIST) and zero-pad them to 32×32 first,
            as LeNet-5 did for MNIST. Same parameters.

    Shape:
        input (Tensor[N, in_chans, 32, 32], or 28×28 with ``small_input``) -> logits
        (Tensor[N, num_classes]).
    """
    check_num_classes(num_classes)
    check_in_chans(in_chans)
    if not isinstance(small_input, bool):
        raise ValueError(f"small_input must be True or False, got {small_input!r}")
    features: OrderedDict[str, nn.Module] = OrderedDict()
    if small_input:
        features["pad"] = nn.ZeroPad2d(MNIST_PADDING)
    features.update(
        c1=Conv2D(6, 5, activation="tanh", in_channels=in_chans),
        s2=AvgPool2D(2),
        c3=Conv2D(16, 5, activation="tanh", in_channels=6),
        s4=AvgPool2D(2),
        c5=Conv2D(120, 5, activation="tanh", in_channels=16),
    )
    head = OrderedDict(
        flatten=Flatten(),
        f6=Dense(84, activation="tanh", in_features=120),
        output=Dense(num_classes, in_features=84) if num_classes else nn.Identity(),
    )
    info = [
        FeatureInfo("features.s2", 6, 2),
        FeatureInfo("features.s4", 16, 4),
        FeatureInfo("features.c5", 120, 4),
    ]
    side = 32 - 2 * MNIST_PADDING if small_input else 32
    return SequentialCNN(features, head, info, (in_chans, side, side), num_classes, 84)
