"""Where a layer's output pixel looks: its window in the layer's input and in the model's input.

The convolution arithmetic (Dumoulin & Visin 2016; Araujo et al., Distill 2019) is in
``_fields``, which ``cnnkit summary``'s RF column uses too, so the two always agree.
"""

from __future__ import annotations

import torch
from torch import nn

from ._fields import FieldTracker, LayerWindow, Window, window_of
from .summary import _dry_run, _layers, parse_input_shape

__all__ = ["LayerWindow", "Window", "layer_windows", "window_of"]


def layer_windows(model: nn.Module, input_shape: tuple[int, int, int] | str) -> dict[str, LayerWindow]:
    """Receptive field, jump and first-pixel centre of every summary layer with a 4-D output.

    Args:
        model: any module taking one image batch.
        input_shape: (C, H, W) or ``'HxWxC'``.

    Returns:
        layer name -> LayerWindow, in forward order.
    """
    shape = parse_input_shape(input_shape)
    fields = FieldTracker()
    found: dict[str, LayerWindow] = {}

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            if isinstance(out, torch.Tensor):
                window = fields.step(name, module, inputs, out)
                if out.dim() == 4:
                    found[name] = window

        return hook

    hooks = [module.register_forward_hook(make_hook(name)) for name, module in _layers(model)]
    with _dry_run(model, shape, None, hooks) as x:
        fields.start(x)
        model(x)
    return found
