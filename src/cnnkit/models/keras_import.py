"""Keras 3 weights into a cnnkit Keras-style CNN (the course's ``hongong_cnn`` and its kind).

The layers that hold weights are paired in order: the model's Conv2D layers with the file's
Conv2D layers, its Dense layers with the file's Dense layers. Each tensor is converted from
Keras' channels-last layout:

- Conv2D kernel (kh, kw, cin, cout) -> (cout, cin, kh, kw);
- Dense kernel (in, out) -> (out, in); for the Dense right after Flatten, the inputs are
  also reordered, because Keras flattens an (H, W, C) map and cnnkit a (C, H, W) one.

Use ``create_model("hongong_cnn", weights="model.keras")`` (or ``.weights.h5``); the file is
read by :mod:`cnnkit.io.keras_h5` (h5py and JSON only, nothing executed).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ..io.keras_h5 import KerasLayer, read_keras_weights
from ..io.weights import WeightsError
from ..layers import Conv2D, Dense

__all__ = ["keras_state_dict"]

_KINDS = {Conv2D: ("Conv2D", 4), Dense: ("Dense", 2)}


def _kind(layer: KerasLayer, source: str) -> str:
    if layer.class_name is not None:
        return layer.class_name
    ndim = layer.arrays[0].ndim
    for kind, kernel_ndim in _KINDS.values():
        if ndim == kernel_ndim:
            return kind
    raise WeightsError(f"{source}: layer {layer.name!r} has a {ndim}-D kernel, neither Conv2D nor Dense")


def _check_conv_config(name: str, module: Conv2D, layer: KerasLayer, source: str) -> None:
    """A .keras archive says how each conv computes; refuse one that computes differently."""
    config = layer.config
    if not config:
        return
    ours = {
        "kernel_size": list(module.kernel_size),
        "strides": list(module.strides),
        "padding": module.padding,
        "dilation_rate": list(module.dilation_rate),
        "groups": module.groups,
    }
    theirs = {k: config.get(k) for k in ours}
    if theirs["padding"] is not None:
        theirs["padding"] = str(theirs["padding"]).lower()
    if config.get("data_format", "channels_last") != "channels_last" or ours != theirs:
        raise WeightsError(
            f"{source}: Keras layer {layer.name!r} ({theirs}) does not compute like {name} ({ours})"
        )


def _flatten_order(model: nn.Module, dense: Dense) -> tuple[int, int, int] | None:
    """(C, H, W) of the map flattened into ``dense``, when it comes straight from the convs."""
    shape = getattr(model, "default_input", None)
    forward_features = getattr(model, "forward_features", None)
    if shape is None or forward_features is None:
        return None
    with torch.no_grad():
        was_training = model.training
        model.eval()
        maps = forward_features(torch.zeros(1, *shape))
        model.train(was_training)
    if maps.dim() != 4 or maps[0].numel() != dense.weight.shape[1] or maps.shape[-2:] == (1, 1):
        return None
    return tuple(maps.shape[1:])


def keras_state_dict(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every Conv2D / Dense tensor taken from a Keras 3 file.

    Other tensors (none in the course CNNs) are kept as they are.

    Raises:
        WeightsError: a model with layers Keras weights cannot fill (batch norm), a different
            number or shape of layers, or a conv that computes differently (listed by name).
    """
    source = str(path)
    layers = read_keras_weights(path)
    unsupported = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if unsupported:
        raise WeightsError(
            f"reading Keras weights into batch-norm layers is not supported ({unsupported[0]})"
        )
    other = [layer.name for layer in layers if _kind(layer, source) not in ("Conv2D", "Dense")]
    if other:
        raise WeightsError(f"{source}: only Conv2D and Dense weights are read, not those of {other}")
    ours = [(n, m) for n, m in model.named_modules() if isinstance(m, Conv2D | Dense)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flattened_into_first_dense = True
    for kind in ("Conv2D", "Dense"):
        mine = [(n, m) for n, m in ours if _KINDS[type(m)][0] == kind]
        theirs = [layer for layer in layers if _kind(layer, source) == kind]
        if len(mine) != len(theirs):
            raise WeightsError(
                f"{source} has {len(theirs)} {kind} layers with weights ({[t.name for t in theirs]}), "
                f"{type(model).__name__} has {len(mine)} ({[n for n, _ in mine]})"
            )
        for (name, module), layer in zip(mine, theirs):
            kernel, *rest = layer.arrays
            if len(rest) != (module.bias is not None):
                raise WeightsError(f"{source}: {layer.name!r} and {name} differ in having a bias")
            if kind == "Conv2D":
                _check_conv_config(name, module, layer, source)
                weight = kernel.transpose(3, 2, 0, 1)
            else:
                order = _flatten_order(model, module) if flattened_into_first_dense else None
                flattened_into_first_dense = False
                if order is not None and kernel.shape[0] == int(np.prod(order)):
                    channels, height, width = order
                    kernel = kernel.reshape(height, width, channels, -1).transpose(2, 0, 1, 3)
                    kernel = kernel.reshape(channels * height * width, -1)
                weight = kernel.T
            if tuple(weight.shape) != tuple(module.weight.shape):
                raise WeightsError(
                    f"{source}: {layer.name!r} gives {name} a {tuple(weight.shape)} kernel, "
                    f"it needs {tuple(module.weight.shape)}"
                )
            state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
            if rest:
                if rest[0].shape != tuple(module.bias.shape):
                    raise WeightsError(f"{source}: {layer.name!r} bias {rest[0].shape} does not fit {name}")
                state[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(rest[0]))
    return state
