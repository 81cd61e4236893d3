"""Activation lookup by Keras name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "softmax": lambda: nn.Softmax(dim=1),
    "linear": nn.Identity,
}


def get_activation(activation: str | nn.Module | None) -> nn.Module:
    """Return a module for ``activation`` (a Keras name, a module, or None for identity).

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if activation is None:
        return nn.Identity()
    if isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, str) and activation.lower() in _ACTIVATIONS:
        return _ACTIVATIONS[activation.lower()]()
    raise ValueError(
        f"activation must be None, a module or one of {sorted(_ACTIVATIONS)}, got {activation!r}"
    )
