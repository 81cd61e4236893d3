"""Pooling layers with Keras defaults (stride = pool size, 'valid'), depth pooling and GAP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_positive_int
from ._fused_pool import fused_max_pool_2x2, max_of_windows
from .padding import PaddingArg, _pair, check_padding, pad_same_2d


class _Pool2D(nn.Module):
    def __init__(
        self,
        pool_size: int | tuple[int, int] = 2,
        strides: int | tuple[int, int] | None = None,
        padding: PaddingArg = "valid",
    ) -> None:
        super().__init__()
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, "strides")
        if min(self.pool_size) < 1 or min(self.strides) < 1:
            raise ValueError("pool_size and strides must be >= 1")
        self.padding = check_padding(padding)
        if not isinstance(self.padding, str):
            raise ValueError(f"pooling padding must be 'same' or 'valid', got {padding!r}")

    def _pads(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects a 4-D NCHW batch, got shape {tuple(x.shape)}")
        if self.padding == "valid":
            return (0, 0, 0, 0)
        return pad_same_2d(x.shape[-2], x.shape[-1], self.pool_size, self.strides)

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, strides={self.strides}, padding={self.padding!r}"


class MaxPool2D(_Pool2D):
    """Max pooling (Keras MaxPool2D). Shape: Tensor[N, C, H, W] -> Tensor[N, C, H_out, W_out]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = self._pads(x)
        if not any(pads) and self._fusable():
            y = fused_max_pool_2x2(x)
            if y is not None:
                return y
        if any(pads):
            # Padded cells must never win the max.
            x = F.pad(x, pads, value=float("-inf"))
        if (
            self._fusable()
            and x.dim() == 4
            and min(x.shape[-2:]) >= 2  # smaller maps: F.max_pool2d's error
            and not _needs_grad(x)
        ):
            return max_of_windows(x)  # about twice as fast for bf16 channels-last maps
        return F.max_pool2d(x, self.pool_size, self.strides)

    def forward_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(self(x))``, the ReLU fused into the pooling kernel where it can be."""
        if self._fusable() and not any(self._pads(x)):
            y = fused_max_pool_2x2(x, relu=True)
            if y is not None:
                return y
        y = self(x)  # a new tensor, never a view of x
        return torch.relu(y) if _needs_grad(y) else y.relu_()

    def _fusable(self) -> bool:
        """2×2 windows with stride 2: the shape the four-view max and the fused kernels take."""
        return self.pool_size == (2, 2) and self.strides == (2, 2)


def _needs_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


class AvgPool2D(_Pool2D):
    """Average pooling (Keras AvgPool2D); with 'same', padded cells are left out of the mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = self._pads(x)
        if not any(pads):
            return F.avg_pool2d(x, self.pool_size, self.strides)
        ones = torch.ones_like(x[:1, :1])
        total = F.avg_pool2d(F.pad(x, pads), self.pool_size, self.strides, divisor_override=1)
        count = F.avg_pool2d(F.pad(ones, pads), self.pool_size, self.strides, divisor_override=1)
        return total / count


class DepthMaxPool(nn.Module):
    """Max over consecutive groups of ``pool_size`` channels (the course's DepthPool).

    Shape: Tensor[N, C, H, W] -> Tensor[N, C // pool_size, H, W].
    """

    def __init__(self, pool_size: int = 2) -> None:
        super().__init__()
        check_positive_int("pool_size", pool_size)
        self.pool_size = pool_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"DepthMaxPool expects a 4-D NCHW batch, got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        if c % self.pool_size:
            raise ValueError(
                f"DepthMaxPool: {c} channels are not divisible by pool_size={self.pool_size}; "
                "choose a pool size that divides the channel count"
            )
        return x.reshape(n, c // self.pool_size, self.pool_size, h, w).amax(dim=2)

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}"


class GlobalAvgPool2D(nn.Module):
    """Mean of each feature map (Keras GlobalAvgPool2D).

    Shape: Tensor[N, C, H, W] -> Tensor[N, C] (or Tensor[N, C, 1, 1] with ``keepdims=True``).
    """

    def __init__(self, keepdims: bool = False) -> None:
        super().__init__()
        self.keepdims = keepdims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"GlobalAvgPool2D expects a 4-D NCHW batch, got shape {tuple(x.shape)}")
        return x.mean(dim=(2, 3), keepdim=self.keepdims)
