"""Layers with Keras semantics on NCHW tensors."""

from .activations import get_activation
from .conv import Conv2D, SeparableConv2D
from .core import Dense, Dropout, Flatten
from .initializers import INITIALIZERS, initialize
from .padding import PADDING_MODES, check_padding, conv_output_size, pad_same_2d, same_padding
from .pooling import AvgPool2D, DepthMaxPool, GlobalAvgPool2D, MaxPool2D
from .se import SqueezeExcite
from .whitening import patch_whitening, whiten_first_conv

__all__ = [
    "INITIALIZERS",
    "PADDING_MODES",
    "AvgPool2D",
    "Conv2D",
    "Dense",
    "DepthMaxPool",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2D",
    "MaxPool2D",
    "SeparableConv2D",
    "SqueezeExcite",
    "check_padding",
    "conv_output_size",
    "get_activation",
    "initialize",
    "pad_same_2d",
    "patch_whitening",
    "same_padding",
    "whiten_first_conv",
]
