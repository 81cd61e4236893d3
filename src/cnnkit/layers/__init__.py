"""Layers with Keras semantics on NCHW tensors."""

from .._lazy import lazy_exports

# Imported on first use (PEP 562): the padding arithmetic needs no torch (`cnnkit shape`).
_EXPORTS = {
    "get_activation": ".activations",
    "Conv2D": ".conv",
    "SeparableConv2D": ".conv",
    "Dense": ".core",
    "Dropout": ".core",
    "Flatten": ".core",
    "INITIALIZERS": ".initializers",
    "initialize": ".initializers",
    "PADDING_MODES": ".padding",
    "check_padding": ".padding",
    "conv_output_size": ".padding",
    "pad_same_2d": ".padding",
    "same_padding": ".padding",
    "AvgPool2D": ".pooling",
    "DepthMaxPool": ".pooling",
    "GlobalAvgPool2D": ".pooling",
    "MaxPool2D": ".pooling",
    "SqueezeExcite": ".se",
    "patch_whitening": ".whitening",
    "whiten_first_conv": ".whitening",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
