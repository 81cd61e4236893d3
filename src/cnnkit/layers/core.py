"""Flatten, Dense and Dropout, so a Keras-style Sequential reads the same here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._base import KernelLayer
from ._checks import check_positive_int


class Flatten(nn.Flatten):
    """Flatten everything but the batch axis: Tensor[N, C, H, W] -> Tensor[N, C*H*W].

    The order is PyTorch's channel-first order; the parameter count of the Dense layer after it
    is the same as in Keras.
    """


class Dense(KernelLayer):
    """Fully connected layer with Keras arguments.

    Args:
        units: output features.
        activation: Keras activation name, a module, or None.
        use_bias: add a learned bias.
        kernel_initializer: Keras initializer name.
        in_features: input features; None infers them from the first input.

    Shape: Tensor[N, in_features] -> Tensor[N, units].
    """

    def __init__(
        self,
        units: int,
        activation: str | nn.Module | None = None,
        use_bias: bool = True,
        kernel_initializer: str | Callable[[torch.Tensor], Any] = "glorot_uniform",
        *,
        in_features: int | None = None,
    ) -> None:
        super().__init__(activation, kernel_initializer)
        self.units = check_positive_int("units", units)
        self.in_features = in_features
        self._create_parameters(None if in_features is None else (units, in_features), units, use_bias)

    def initialize_parameters(self, x: torch.Tensor) -> None:  # called by LazyModuleMixin
        if self.has_uninitialized_params():
            self.in_features = x.shape[-1]
            self._materialize((self.units, self.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Dense expects {self.in_features} input features, got shape {tuple(x.shape)}; "
                "check the input size or add a Flatten layer"
            )
        return self.activation(F.linear(x, self.weight, self.bias))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, units={self.units}, use_bias={self.bias is not None}"


Dropout = nn.Dropout
