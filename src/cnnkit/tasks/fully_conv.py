"""Fully convolutional networks (Géron 14.9.1): a trained classifier's dense layers as convolutions.

A Dense layer over a flattened C × h × w feature map is a C → units convolution with an h × w
kernel and 'valid' padding (the weights are the same numbers, reshaped); a Dense layer after it
is a 1 × 1 convolution; a global average pool becomes an h × w average pool with stride 1. On
the classifier's own input size the result is one cell; on a larger image it slides the
classifier over every window in one pass and returns a class-score map.

Each output cell (i, j) is the classifier applied to the input window whose top-left corner is
at (i × stride, j × stride), where stride is the feature extractor's total stride. That is
exact when the feature extractor pads with 'valid'. With 'same' padding (hongong_cnn and most
Keras CNNs), cells near a window's border see the neighbouring pixels where the classifier on
the crop saw zero padding, so the scores are close but not equal. (The course notes say the
converted layer uses 'same' padding; it must be 'valid', or the map would not shrink to 1 × 1.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Dense, Flatten, GlobalAvgPool2D
from ..models import SequentialCNN

_SUPPORTED = (
    "Flatten, Dense, Dropout, Identity, GlobalAvgPool2D, nn.AdaptiveAvgPool2d(1), elementwise activations"
)


class DenseAsConv(nn.Module):
    """A Dense layer applied at every position of a feature map.

    Args:
        dense: the trained Dense layer (its weights are shared, not copied).
        kernel: (h, w) of the window the Dense layer read as a flat vector (1, 1 after the first).
        channels: channels of that window.

    Shape: Tensor[N, channels, H, W] -> Tensor[N, units, H - h + 1, W - w + 1].
    """

    def __init__(self, dense: Dense, kernel: tuple[int, int], channels: int) -> None:
        super().__init__()
        expected = channels * kernel[0] * kernel[1]
        if dense.in_features != expected:
            raise ValueError(
                f"Dense layer takes {dense.in_features} features, but the map before it has "
                f"{channels} x {kernel[0]} x {kernel[1]} = {expected}"
            )
        self.dense = dense
        self.kernel = kernel
        self.channels = channels
        self.activation = _channelwise(dense.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Flatten is channel-first (C, h, w), so the Dense weight rows reshape to conv kernels.
        weight = self.dense.weight.view(self.dense.units, self.channels, *self.kernel)
        return self.activation(F.conv2d(x, weight, self.dense.bias))

    def extra_repr(self) -> str:
        return f"{self.channels}, {self.dense.units}, kernel_size={self.kernel}"


def _channelwise(activation: nn.Module) -> nn.Module:
    if isinstance(activation, nn.Softmax):
        return nn.Softmax(dim=1)
    if isinstance(activation, nn.LogSoftmax):
        return nn.LogSoftmax(dim=1)
    return activation


class FullyConvolutional(nn.Module):
    """A classifier whose head runs as convolutions over any image at least as large as its input.

    Attributes:
        features: the classifier's feature layers (shared with it).
        head: the converted head.
        stride: input pixels between neighbouring output cells.
        window: (H, W) of the input the classifier was built for; cell (i, j) sees the window
            starting at (i * stride, j * stride).

    Shape:
        Tensor[N, C, H, W] -> Tensor[N, num_classes, (H' - h) + 1, (W' - w) + 1], with H', W' the
        feature map size of the input and h, w that of the classifier's own input.
    """

    def __init__(
        self, features: nn.Module, head: nn.Sequential, stride: int, window: tuple[int, int]
    ) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.stride = stride
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def to_fully_convolutional(model: SequentialCNN) -> FullyConvolutional:
    """Convert a trained Keras-style classifier (``features`` + ``head``) to a fully convolutional one.

    The weights are shared with ``model``, not copied; both give the same logits on the
    classifier's own input size.

    Args:
        model: a SequentialCNN such as ``hongong_cnn`` or ``geron_fashion_cnn``.

    Raises:
        ValueError: a model without ``features`` / ``head``, or a head layer that has no
            convolutional equivalent (the message lists the supported ones).
    """
    if not isinstance(model, SequentialCNN):
        raise ValueError(
            f"to_fully_convolutional needs a SequentialCNN (features + head, e.g. hongong_cnn), "
            f"got {type(model).__name__}"
        )
    channels, height, width = model.default_input
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        fmap = model.features(torch.zeros(1, channels, height, width, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
    c, h, w = fmap.shape[1:]
    layers: list[nn.Module] = []
    kernel: tuple[int, int] | None = None  # window the next Dense reads; None until flattened
    for name, layer in model.head.named_children():
        if isinstance(layer, Flatten | nn.Flatten):
            kernel = (h, w)
        elif isinstance(layer, GlobalAvgPool2D) or (
            isinstance(layer, nn.AdaptiveAvgPool2d) and layer.output_size in (1, (1, 1))
        ):
            # The mean over the crop's h x w map is an h x w average pool with stride 1.
            layers.append(nn.AvgPool2d((h, w), stride=1))
            kernel = (1, 1)
        elif isinstance(layer, Dense):
            if kernel is None:
                raise ValueError(f"head layer {name!r} (Dense) reads a 4-D map without Flatten before it")
            layers.append(DenseAsConv(layer, kernel, layer.in_features // (kernel[0] * kernel[1])))
            kernel = (1, 1)
        elif isinstance(layer, nn.Dropout | nn.Identity | nn.ReLU | nn.Sigmoid | nn.Tanh | nn.SiLU | nn.GELU):
            layers.append(layer)
        else:
            raise ValueError(
                f"head layer {name!r} ({type(layer).__name__}) has no convolutional form; "
                f"supported: {_SUPPORTED}"
            )
    stride = model.feature_info[-1].stride if model.feature_info else max(1, round(height / h))
    return FullyConvolutional(model.features, nn.Sequential(*layers), stride, (height, width))
