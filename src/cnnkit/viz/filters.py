"""Weights: filter grids of a conv layer and weight histograms, trained vs freshly initialised.

The course (혼공머신 ch. 8) draws the 32 kernels of the first conv layer in two rows of 16 with
one colour scale for all (``vmin=-0.5, vmax=0.5``), and compares the histogram, mean and
standard deviation of trained weights with those of a freshly initialised layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..errors import UsageError
from ..inspect.features import conv_layer_names, get_layer, weight_layer_names
from ._common import fixed_margins, grid_shape

__all__ = ["filter_tiles", "layer_weight", "plot_filters", "plot_weight_histograms", "weight_stats"]


def layer_weight(model: nn.Module, layer: str) -> torch.Tensor:
    """The ``weight`` of a named layer, detached on the CPU.

    Raises:
        UsageError: an unknown layer, or one without a weight (the message lists those with one).
    """
    module = get_layer(model, layer)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or isinstance(weight, nn.parameter.UninitializedParameter):
        raise UsageError(
            f"layer {layer!r} ({type(module).__name__}) has no weights; layers with weights: "
            f"{', '.join(weight_layer_names(model))}"
        )
    return weight.detach().float().cpu()


def filter_tiles(
    weight: torch.Tensor, in_channel: int = 0, color: bool | None = None, vmax: float | None = None
) -> tuple[np.ndarray, float]:
    """One tile per output channel of a conv kernel, on one symmetric scale.

    Args:
        weight (Tensor[C_out, C_in, kH, kW]): the conv kernel.
        in_channel: which input channel to show for grayscale tiles.
        color: draw each filter's three input channels as RGB (default: when ``C_in == 3``).
        vmax: the scale is [-vmax, vmax] for all tiles (default: the largest |weight|).

    Returns:
        (tiles, vmax): tiles is float [C_out, kH, kW] in weight units, or for colour
        [C_out, kH, kW, 3] mapped to [0, 1] with 0.5 meaning a zero weight.

    Raises:
        UsageError: not a 4-D kernel, or ``in_channel`` out of range.
    """
    if weight.dim() != 4:
        raise UsageError(
            f"filter grids need a conv kernel [C_out, C_in, kH, kW], got shape {tuple(weight.shape)}"
        )
    w = weight.detach().float().cpu()
    color = w.shape[1] == 3 if color is None else color
    if color and w.shape[1] != 3:
        raise UsageError(f"colour filters need 3 input channels, this kernel has {w.shape[1]}")
    if not color and not 0 <= in_channel < w.shape[1]:
        raise UsageError(f"--channel must be in 0..{w.shape[1] - 1} for this layer, got {in_channel}")
    scale = float(w.abs().max()) if vmax is None else float(vmax)
    scale = scale if scale > 0 else 1.0
    if color:
        rgb = (0.5 + w.permute(0, 2, 3, 1) / (2 * scale)).clamp(0, 1)
        return rgb.numpy(), scale
    return w[:, in_channel].numpy(), scale


def plot_filters(
    model: nn.Module,
    layer: str | None = None,
    in_channel: int = 0,
    color: bool | None = None,
    vmax: float | None = None,
    ncols: int = 16,
    title: str | None = None,
) -> Figure:
    """Grid of a conv layer's filters: one tile per output channel, one shared colour scale.

    Args:
        model: any module.
        layer: a conv layer name (default: the first conv layer).
        in_channel: input channel shown in grayscale tiles.
        color: RGB tiles (default: for kernels with 3 input channels, i.e. a colour model's first layer).
        vmax: symmetric scale [-vmax, vmax] (the course uses 0.5; default: the largest |weight|).
        ncols: tiles per row (the course: 16).
        title: figure title.

    Returns:
        Figure with one image axes per output channel (in channel order) and a colour bar
        for grayscale tiles.
    """
    if layer is None:
        convs = conv_layer_names(model)
        if not convs:
            raise UsageError(f"{type(model).__name__} has no conv layer to draw")
        layer = convs[0]
    weight = layer_weight(model, layer)
    tiles, scale = filter_tiles(weight, in_channel, color, vmax)
    n = tiles.shape[0]
    rows, cols = grid_shape(n, ncols)
    # Fixed margins (in inches) rather than constrained layout: hundreds of tiles lay out at once.
    tile, title_h, bar_w = 0.5, 0.4, 0.0 if tiles.ndim == 4 else 0.8
    width, height = max(4.0, tile * cols + 0.2 + bar_w), tile * rows + title_h + 0.1
    fig = plt.figure(figsize=(width, height))
    fig.subplots_adjust(
        left=0.1 / width,
        right=1 - (0.1 + bar_w) / width,
        bottom=0.05 / height,
        top=1 - title_h / height,
        wspace=0.1,
        hspace=0.1,
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        if tiles.ndim == 4:
            ax.imshow(tiles[i], interpolation="nearest")
        else:
            image = ax.imshow(tiles[i], vmin=-scale, vmax=scale, cmap="viridis", interpolation="nearest")
    if image is not None:
        cax = fig.add_axes((1 - (bar_w - 0.1) / width, 0.1, 0.12 / width, 1 - title_h / height - 0.1))
        fig.colorbar(image, cax=cax)
    shape = "×".join(str(s) for s in weight.shape)
    detail = "RGB" if tiles.ndim == 4 else f"input channel {in_channel}"
    fig.suptitle(title or f"{layer}: {n} filters ({shape}), {detail}, scale ±{scale:.2g}", fontsize=9)
    return fig


def weight_stats(weight: torch.Tensor) -> dict[str, float]:
    """Mean and (population) standard deviation of a weight tensor, as the course prints them."""
    w = weight.detach().double().flatten()
    return {"mean": float(w.mean()), "std": float(w.std(unbiased=False)), "count": w.numel()}


def plot_weight_histograms(weights: Mapping[str, torch.Tensor], layer: str = "", bins: int = 30) -> Figure:
    """Histograms of weight tensors side by side on shared bins, mean and std in each title.

    Args:
        weights: panel label -> weight tensor, e.g. ``{"trained": w1, "freshly initialised": w0}``.
        layer: layer name for the figure title.
        bins: number of bins, shared by all panels (edges span all tensors).

    Returns:
        Figure with one axes per entry; the bars of axes ``i`` are the counts of entry ``i``.
    """
    if not weights:
        raise ValueError("no weights to plot")
    flat = {label: w.detach().double().flatten().cpu().numpy() for label, w in weights.items()}
    low = min(float(v.min()) for v in flat.values())
    high = max(float(v.max()) for v in flat.values())
    edges = np.linspace(low, high if high > low else low + 1e-6, bins + 1)
    fig, axes = plt.subplots(1, len(flat), figsize=(4.2 * len(flat), 3.5), squeeze=False, sharex=True)
    fixed_margins(fig, left=0.7, right=0.15, bottom=0.55, top=0.85, wspace=0.3)
    for ax, (label, values) in zip(axes[0], flat.items()):
        stats = weight_stats(torch.from_numpy(values))
        ax.hist(values, bins=edges, color="tab:blue" if ax is axes[0][0] else "tab:orange")
        ax.set_title(f"{label}\nmean {stats['mean']:.4g}, std {stats['std']:.4g}", fontsize=9)
        ax.set_xlabel("weight")
        ax.set_ylabel("count")
        ax.grid(alpha=0.3)
    if layer:
        fig.suptitle(f"{layer} weights", fontsize=10)
    return fig
