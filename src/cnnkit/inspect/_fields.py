"""Receptive-field arithmetic: one layer's window, and its output's field in the model's input.

The course's convolution arithmetic (Dumoulin & Visin, 2016): a layer with kernel ``k``, stride
``s``, dilation ``d`` and padding ``p`` maps output pixel ``i`` to the input rows
``i * s - p ... i * s - p + (k - 1) * d``. Composed from the input on, each layer's output has a
receptive field ``r``, a jump ``j`` (input pixels between neighbouring outputs) and the input
coordinate ``c0`` of the centre of its first pixel (Araujo et al., Distill 2019):
``r' = r + (k - 1) d j``, ``c0' = c0 + ((k - 1) d / 2 - p) j``, ``j' = j s``.
Where branches meet (a residual sum), the branch with the larger field is followed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers.padding import pad_same_2d


@dataclass(frozen=True)
class Window:
    """A sliding-window layer's geometry at one input size, per axis (rows, cols).

    Attributes:
        kernel: taps per axis (``pool_size`` for pooling layers).
        stride: step per axis.
        dilation: spacing between taps per axis.
        pad: zeros (or -inf for max pooling) added before the first row and column.
    """

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int]

    def span(self, axis: int) -> int:
        return (self.kernel[axis] - 1) * self.dilation[axis] + 1


@dataclass(frozen=True)
class LayerWindow:
    """Receptive field of one layer's output in the model's input.

    Attributes:
        name: the layer's summary name.
        field: receptive field per axis (rows, cols), in input pixels.
        jump: input pixels between neighbouring output pixels, per axis.
        start: input coordinate (row, col) of the centre of output pixel (0, 0).
        window: the layer's own sliding window, or None for a layer that works pixel by pixel.
    """

    name: str
    field: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]
    window: Window | None

    def box(self, row: int, col: int) -> tuple[float, float, float, float]:
        """(top, left, bottom, right) input pixel span of output pixel (row, col), inclusive;
        it may reach into the padding (below 0 or past the input's edge)."""
        top = self.start[0] + row * self.jump[0] - (self.field[0] - 1) / 2
        left = self.start[1] + col * self.jump[1] - (self.field[1] - 1) / 2
        return top, left, top + self.field[0] - 1, left + self.field[1] - 1


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, tuple | list):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))  # type: ignore[call-overload]


def window_of(module: nn.Module, height: int, width: int) -> Window | None:
    """The sliding window of a conv or pooling layer for an input of ``height`` × ``width``.

    Understands cnnkit's Keras-style layers (``'same'`` resolved as ``layers.padding`` does) and
    torch's ``nn.Conv2d`` / ``nn.MaxPool2d`` / ``nn.AvgPool2d``. Returns None for other layers.
    """
    kernel = getattr(module, "kernel_size", None) or getattr(module, "pool_size", None)
    if kernel is None or isinstance(module, nn.Conv1d | nn.Conv3d | nn.ConvTranspose2d):
        return None
    kernel = _pair(kernel)
    stride_value = getattr(module, "stride", None) or getattr(module, "strides", None)
    stride = _pair(stride_value) if stride_value is not None else kernel
    dilation = _pair(getattr(module, "dilation", None) or getattr(module, "dilation_rate", None) or 1)
    padding = getattr(module, "padding", 0)
    if padding == "valid":
        pad = (0, 0)
    elif padding == "same":
        left, _, top, _ = pad_same_2d(height, width, kernel, stride, dilation)
        pad = (top, left)
    else:
        pad = _pair(padding)
    return Window(kernel, stride, dilation, pad)


class FieldTracker:
    """Follows the receptive field through one traced forward pass (``cnnkit summary``'s RF
    column and :func:`~cnnkit.inspect.receptive.layer_windows` both come from it).

    Call :meth:`start` with the input batch, then :meth:`step` from a forward hook on every
    layer, in forward order.
    """

    def __init__(self) -> None:
        self._known: dict[int, tuple[tuple[int, int], tuple[int, int], tuple[float, float]]] = {}
        self._keep: list[torch.Tensor] = []  # tensor ids are only unique while the tensors live

    def start(self, x: torch.Tensor) -> None:
        """Mark the input batch: a field of one pixel, a jump of one, centred on pixel 0."""
        self._known[id(x)] = ((1, 1), (1, 1), (0.0, 0.0))
        self._keep.append(x)

    def step(self, name: str, module: nn.Module, inputs: tuple, out: torch.Tensor) -> LayerWindow:
        """The field of ``out``, which ``module`` made from ``inputs``; remembered for later layers."""
        tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
        parents = [self._known[id(t)] for t in tensors if id(t) in self._known]
        # An input made between layers (a residual sum) is not known: it comes from the
        # widest field so far, as fields only grow along the way.
        field, jump, start = max(parents) if parents else max(self._known.values())
        window = window_of(module, *tensors[0].shape[-2:]) if tensors and tensors[0].dim() == 4 else None
        if window is not None:
            span = tuple((window.kernel[a] - 1) * window.dilation[a] for a in (0, 1))
            field = tuple(field[a] + span[a] * jump[a] for a in (0, 1))  # type: ignore[assignment]
            start = tuple(start[a] + (span[a] / 2 - window.pad[a]) * jump[a] for a in (0, 1))  # type: ignore[assignment]
            jump = tuple(jump[a] * window.stride[a] for a in (0, 1))  # type: ignore[assignment]
        self._known[id(out)] = (field, jump, start)
        self._keep.append(out)
        return LayerWindow(name, field, jump, start, window)
