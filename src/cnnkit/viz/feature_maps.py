"""Feature maps: what a layer outputs for one image, one tile per channel.

The course (혼공머신 ch. 8) feeds the first training image, an ankle boot, to the trained CNN
and draws conv1's 32 maps in a 4 × 8 grid and conv2's 64 maps in an 8 × 8 grid, each tile on
its own colour scale. Here any layer of any model can be drawn, found by its summary name and
read with a forward hook.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure, SubFigure
from torch import nn

from ..errors import UsageError
from ..inspect.features import capture_outputs, conv_layer_names
from ._common import display_image, grid_shape

__all__ = ["MAX_LAYERS", "default_map_layers", "feature_maps", "plot_feature_maps", "plot_layer_maps"]

# Conv layers drawn when none are named: the course CNN's 2 all, a deep model's 8 spread from
# the first to the last (every one of EfficientNet-Lite0's 49 made a 7.6 MB figure in 36 s).
MAX_LAYERS = 8


def default_map_layers(model: nn.Module, max_layers: int | None = MAX_LAYERS) -> list[str]:
    """The conv layers drawn when none are named: all of them, or ``max_layers`` of them evenly
    spread through the model (the first and the last among them), in model order."""
    if max_layers is not None and max_layers < 1:
        raise UsageError(f"max_layers must be >= 1 (or None for every conv layer), got {max_layers}")
    names = conv_layer_names(model)
    if max_layers is None or len(names) <= max_layers:
        return names
    if max_layers == 1:
        return names[:1]
    picks = sorted({round(i * (len(names) - 1) / (max_layers - 1)) for i in range(max_layers)})
    return [names[i] for i in picks]


def feature_maps(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str] | None = None,
    max_layers: int | None = MAX_LAYERS,
) -> dict[str, torch.Tensor]:
    """Activations of the named layers for one prepared image; without names, of the conv
    layers :func:`default_map_layers` picks (every one up to ``max_layers``; None: all).

    Args:
        model: any module.
        x (Tensor[1, C, H, W] or Tensor[C, H, W]): the image as the model takes it.
        layers: layer names as ``cnnkit summary`` prints them.
        max_layers: without ``layers``, at most this many conv layers, spread through the model.

    Returns:
        name -> Tensor[C', H', W'] (the batch axis dropped), in ``layers`` order.

    Raises:
        UsageError: an unknown layer (the message lists the valid names).
    """
    layers = list(layers) if layers else default_map_layers(model, max_layers)
    if not layers:
        raise UsageError(f"{type(model).__name__} has no conv layer; name one with --layer")
    x = x if x.dim() == 4 else x.unsqueeze(0)
    outputs = capture_outputs(model, x, layers)
    return {name: out[0].cpu() for name, out in outputs.items()}


_TILE = 0.95  # inches per tile
_TITLE = 0.35  # inches above each block for its title


def _as_maps(maps: torch.Tensor, name: str) -> torch.Tensor:
    if maps.dim() == 1:  # a dense layer: one 1×1 tile per unit
        maps = maps.view(-1, 1, 1)
    if maps.dim() != 3:
        raise UsageError(f"layer {name!r} gives shape {tuple(maps.shape)}; feature maps need [C, H, W]")
    return maps


def _draw_grid(
    target: SubFigure, maps: torch.Tensor, name: str, ncols: int, shown: int, height: float
) -> None:
    rows, cols = grid_shape(shown, ncols)
    # Fixed margins instead of constrained layout: hundreds of tiles lay out in no time.
    target.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - _TITLE / height, wspace=0.06, hspace=0.06
    )
    axes = target.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < shown:
            ax.imshow(maps[i].float().numpy(), cmap="viridis", interpolation="nearest")
    c, h, w = maps.shape
    more = f", first {shown} of {c}" if shown < c else ""
    target.suptitle(f"{name}: {c} maps of {h}×{w}{more}", fontsize=9, y=1 - 0.12 / height, va="top")


def plot_feature_maps(
    maps: dict[str, torch.Tensor],
    image: torch.Tensor | None = None,
    ncols: int = 8,
    max_maps: int | None = 64,
    title: str | None = None,
) -> Figure:
    """Draw feature maps as grids, one block per layer, each tile on its own colour scale.

    Args:
        maps: layer name -> Tensor[C, H, W] (see :func:`feature_maps`).
        image (Tensor[C, H, W]): the input, drawn first (uint8 or float).
        ncols: tiles per row (the course: 8).
        max_maps: at most this many channels per layer (None: all).
        title: figure title.

    Returns:
        Figure made of subfigures: the input (if given), then one per layer whose image axes
        are the maps in channel order (``subfig.axes[k].images[0].get_array()`` is channel k).
    """
    if not maps:
        raise ValueError("no feature maps to plot")
    blocks = []
    for name, m in maps.items():
        m = _as_maps(m, name)
        shown = m.shape[0] if max_maps is None else min(m.shape[0], max_maps)
        blocks.append((name, m, shown, grid_shape(shown, ncols)[0] * _TILE + _TITLE))
    heights = [b[3] for b in blocks]
    if image is not None:
        heights.insert(0, 1.6)
    if title:
        heights.insert(0, 0.35)
    width = max(4.0, _TILE * min(ncols, max(b[2] for b in blocks)) + 0.2)
    fig = plt.figure(figsize=(width, sum(heights)))
    subfigs = list(fig.subfigures(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0])
    if title:
        subfigs.pop(0).suptitle(title, fontsize=10, y=0.5, va="center")
    if image is not None:
        ax = subfigs.pop(0).add_axes((0.3, 0.03, 0.4, 0.8))
        shown_image = display_image(image)
        ax.imshow(shown_image, cmap="gray_r" if shown_image.ndim == 2 else None)
        ax.axis("off")
        ax.set_title("input", fontsize=9)
    for sub, (name, m, shown, height) in zip(subfigs, blocks):
        _draw_grid(sub, m, name, ncols, shown, height)
    return fig


def plot_layer_maps(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str] | None = None,
    image: torch.Tensor | None = None,
    ncols: int = 8,
    max_maps: int | None = 64,
    title: str | None = None,
    max_layers: int | None = MAX_LAYERS,
) -> Figure:
    """:func:`feature_maps` then :func:`plot_feature_maps` (``image`` defaults to ``x``)."""
    maps = feature_maps(model, x, layers, max_layers)
    shown = image if image is not None else (x[0] if x.dim() == 4 else x)
    return plot_feature_maps(maps, shown, ncols, max_maps, title)
