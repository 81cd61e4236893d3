"""Keras-named weight initializers (fan computed as Keras does for conv and dense kernels)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "zeros",
    "torch",
)


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    # PyTorch layout: (out, in, *kernel); Keras counts the receptive field in both fans.
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


# Std of a unit normal truncated to [-2, 2]; Keras divides by it so the result has the asked std.
_TRUNC_STD_FACTOR = 0.87962566103423978


def _truncated_normal(weight: torch.Tensor, std: float) -> None:
    # Keras' truncated normal rescales so the *truncated* distribution has the requested std.
    wide = std / _TRUNC_STD_FACTOR
    nn.init.trunc_normal_(weight, 0.0, wide, -2 * wide, 2 * wide)


def initialize(weight: torch.Tensor, name: str | Callable[[torch.Tensor], object]) -> None:
    """Fill ``weight`` in place with a Keras-named initializer.

    Args:
        weight: a kernel in PyTorch layout (Tensor[out, in, *kernel] or Tensor[out, in]).
        name: one of INITIALIZERS, or a callable applied to the tensor.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if callable(name):
        with torch.no_grad():
            name(weight)
        return
    fan_in, fan_out = _fans(weight)
    with torch.no_grad():
        if name == "glorot_uniform":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(weight, -limit, limit)
        elif name == "glorot_normal":
            _truncated_normal(weight, math.sqrt(2.0 / (fan_in + fan_out)))
        elif name == "he_normal":
            _truncated_normal(weight, math.sqrt(2.0 / fan_in))
        elif name == "he_uniform":
            limit = math.sqrt(6.0 / fan_in)
            nn.init.uniform_(weight, -limit, limit)
        elif name == "lecun_normal":
            _truncated_normal(weight, math.sqrt(1.0 / fan_in))
        elif name == "lecun_uniform":
            limit = math.sqrt(3.0 / fan_in)
            nn.init.uniform_(weight, -limit, limit)
        elif name == "zeros":
            nn.init.zeros_(weight)
        elif name == "torch":
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        else:
            raise ValueError(f"kernel_initializer must be one of {INITIALIZERS}, got {name!r}")
