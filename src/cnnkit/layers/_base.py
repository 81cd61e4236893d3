"""What the Keras-style layers share: the argument check and the weight that may wait for data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from .activations import get_activation
from .initializers import initialize


class KernelLayer(LazyModuleMixin, nn.Module):
    """A layer with a ``weight`` (Keras initializer) and an optional zero-initialised ``bias``.

    The weight's input size may be left out: it is then an uninitialised parameter, sized and
    initialised from the first batch (``LazyModuleMixin``), like Keras. Subclasses pass their
    activation and initializer up, call ``_create_parameters`` in ``__init__`` and
    ``_materialize`` from ``initialize_parameters``.
    """

    cls_to_become = None

    def __init__(
        self, activation: str | nn.Module | None, kernel_initializer: str | Callable[[torch.Tensor], Any]
    ) -> None:
        super().__init__()
        self.kernel_initializer = kernel_initializer
        self.activation = get_activation(activation)

    def _create_parameters(self, weight_shape: tuple[int, ...] | None, out: int, use_bias: bool) -> None:
        """``weight`` of ``weight_shape`` (None: wait for the first batch) and ``bias`` [out]."""
        if weight_shape is None:
            self.weight = UninitializedParameter()
        else:
            self.weight = nn.Parameter(torch.empty(weight_shape))
        self.bias = nn.Parameter(torch.zeros(out)) if use_bias else None
        if weight_shape is not None:
            self.reset_parameters()
            self._drop_lazy_hooks()

    def _drop_lazy_hooks(self) -> None:
        """Remove LazyModuleMixin's first-batch hooks, as its first forward does once the weight
        is sized. A layer sized at construction would otherwise keep them until its first batch,
        and ``torch.compile`` fails on a hook that removes itself while it is being traced."""
        for name in ("_initialize_hook", "_load_hook"):
            handle = getattr(self, name, None)
            if handle is not None:
                handle.remove()
                delattr(self, name)

    def _materialize(self, weight_shape: tuple[int, ...]) -> None:
        with torch.no_grad():
            self.weight.materialize(weight_shape)
            self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.has_uninitialized_params():
            return
        initialize(self.weight, self.kernel_initializer)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
