"""Conv2D with Keras semantics on NCHW tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._base import KernelLayer
from ._checks import check_positive_int
from .padding import PaddingArg, _pair, check_padding, pad_same_2d, static_same_padding


class Conv2D(KernelLayer):
    """2-D convolution that takes Keras arguments.

    ``padding='same'`` pads like TensorFlow (output ``ceil(in / stride)``, the odd extra zero at
    the bottom/right); the split is computed for each input size, never cached. The input channel
    count may be left out (``in_channels=None``): it is then taken from the first batch, like Keras.

    Args:
        filters: number of output channels (feature maps).
        kernel_size: window size, an int or (rows, cols).
        strides: step, an int or (rows, cols).
        padding: ``'valid'``, ``'same'``, or zeros per side (int or pair).
        dilation_rate: spacing between kernel taps.
        groups: channel groups (``groups == in_channels`` gives a depthwise convolution).
        activation: Keras activation name, a module, or None.
        use_bias: add a learned bias per output channel.
        kernel_initializer: Keras initializer name (``'glorot_uniform'``, ``'he_normal'``, ...).
        in_channels: input channels; None infers them from the first input.

    Shape:
        input (Tensor[N, C_in, H, W]) -> output (Tensor[N, filters, H_out, W_out]).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = 1,
        padding: PaddingArg = "valid",
        dilation_rate: int | tuple[int, int] = 1,
        groups: int = 1,
        activation: str | nn.Module | None = None,
        use_bias: bool = True,
        kernel_initializer: str | Callable[[torch.Tensor], Any] = "glorot_uniform",
        *,
        in_channels: int | None = None,
    ) -> None:
        super().__init__(activation, kernel_initializer)
        self.filters = check_positive_int("filters", filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        if min(self.kernel_size) < 1 or min(self.strides) < 1 or min(self.dilation_rate) < 1:
            raise ValueError("kernel_size, strides and dilation_rate must be >= 1")
        self.padding = check_padding(padding)
        if groups < 1 or filters % groups:
            raise ValueError(f"filters ({filters}) must be divisible by groups ({groups})")
        self.groups = groups
        self.in_channels = in_channels
        self._static_padding = self._resolve_static_padding()
        shape = None if in_channels is None else self._weight_shape(in_channels)
        self._create_parameters(shape, filters, use_bias)

    def _weight_shape(self, in_channels: int) -> tuple[int, ...]:
        if in_channels % self.groups:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({self.groups})")
        return (self.filters, in_channels // self.groups, *self.kernel_size)

    def _resolve_static_padding(self) -> tuple[int, int] | None:
        """Padding known at build time; None when 'same' must be computed per input size."""
        if self.padding == "valid":
            return (0, 0)
        if self.padding == "same":
            pads = [
                static_same_padding(k, s, d)
                for k, s, d in zip(self.kernel_size, self.strides, self.dilation_rate)
            ]
            return None if None in pads else (pads[0], pads[1])
        return self.padding  # explicit (rows, cols)

    def initialize_parameters(self, x: torch.Tensor) -> None:  # called by LazyModuleMixin
        if self.has_uninitialized_params():
            if x.dim() != 4:
                raise ValueError(f"Conv2D expects a 4-D NCHW batch, got shape {tuple(x.shape)}")
            _, c, h, w = x.shape
            if w in (1, 3) and min(c, h) >= 8:  # [N, 28, 28, 1]: read as 28 channels of 28×1 images
                raise ValueError(
                    f"Conv2D got shape {tuple(x.shape)}, which looks channels-last (Keras' NHWC); "
                    "cnnkit's layers take NCHW batches: give x.permute(0, 3, 1, 2)"
                )
            self.in_channels = x.shape[1]
            self._materialize(self._weight_shape(self.in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.forward_pre_activation(x))

    def forward_pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution without its activation (``forward(x) == activation(this)``)."""
        if x.dim() != 4:
            raise ValueError(f"Conv2D expects a 4-D NCHW batch, got shape {tuple(x.shape)}")
        if self._static_padding is None:
            x = F.pad(
                x, pad_same_2d(x.shape[-2], x.shape[-1], self.kernel_size, self.strides, self.dilation_rate)
            )
            padding: tuple[int, int] = (0, 0)
        else:
            padding = self._static_padding
        return F.conv2d(x, self.weight, self.bias, self.strides, padding, self.dilation_rate, self.groups)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.filters}, kernel_size={self.kernel_size}, strides={self.strides}, "
            f"padding={self.padding!r}, dilation_rate={self.dilation_rate}, groups={self.groups}, "
            f"use_bias={self.bias is not None}"
        )


class SeparableConv2D(nn.Module):
    """Depthwise convolution followed by a 1×1 pointwise convolution (Keras SeparableConv2D).

    Args:
        in_channels: input channels.
        filters: output channels of the pointwise step.
        kernel_size: depthwise window size.
        strides: depthwise step.
        padding: ``'valid'``, ``'same'`` or an int.
        depth_multiplier: depthwise outputs per input channel.
        activation: applied after the pointwise step.
        use_bias: bias on the pointwise step (the depthwise step has none, as in Keras).
    """

    def __init__(
        self,
        in_channels: int,
        filters: int,
        kernel_size: int | tuple[int, int] = 3,
        strides: int | tuple[int, int] = 1,
        padding: PaddingArg = "same",
        depth_multiplier: int = 1,
        activation: str | nn.Module | None = None,
        use_bias: bool = True,
    ) -> None:
        super().__init__()
        mid = in_channels * depth_multiplier
        self.depthwise = Conv2D(
            mid, kernel_size, strides, padding, groups=in_channels, use_bias=False, in_channels=in_channels
        )
        self.pointwise = Conv2D(filters, 1, use_bias=use_bias, activation=activation, in_channels=mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))
