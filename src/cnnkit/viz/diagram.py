"""Architecture diagrams like Keras ``plot_model(show_shapes=True)``, drawn without Graphviz.

Each layer is a box with its name, type, input and output shapes and parameter count; arrows
follow the data flow recorded by :func:`cnnkit.inspect.features.trace_graph`, so the two paths
of a residual unit and the four branches of an Inception block are drawn side by side.
Matplotlib renders the same figure to PNG and SVG; no system Graphviz is needed.

Layout (a small layered layout, enough for the course's architectures): a box's row is its
longest distance from the input; a box fed by one box sits under it, its siblings spread
left to right in execution order; a box fed by several sits at the mean of their columns.
An arrow that skips rows runs straight down if its column is free, else around the right side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from torch import nn

from ..inspect.features import GraphNode, LayerGraph, trace_graph
from ..inspect.summary import SHAPES_NOTE
from ._common import save_figure

__all__ = ["DiagramLayout", "layout_graph", "plot_diagram", "plot_model_diagram", "save_diagram"]

# Layers that change nothing: hidden, their input goes straight to their consumers.
_HIDDEN_TYPES = {"Identity"}
_COLOURS = (
    (("conv",), "#cfe2f3"),
    (("pool",), "#d9ead3"),
    (("dense", "linear"), "#fce5cd"),
    (("norm",), "#e6e6e6"),
    (("relu", "sigmoid", "tanh", "gelu", "silu", "softmax", "activation", "elu"), "#f6f6f6"),
    (("dropout",), "#f6f6f6"),
    (("squeeze", "excite"), "#ead1dc"),
)
_OP_COLOUR = "#fff2cc"
_INPUT_COLOUR = "#ffffff"

# Sizes in inches.
_ROW = 0.95
_BOX_H = 0.62
_COL_GAP = 0.35
_FONT = 7.0
_CHAR_W = 0.0065 * _FONT  # average DejaVu Sans glyph width per point size, in inches


@dataclass
class DiagramLayout:
    """Where each visible node goes.

    Attributes:
        nodes: the visible nodes (hidden Identity layers removed), parents remapped to visible ones.
        rank: node index -> row (0 = input).
        column: node index -> column (in box widths; may be fractional).
        edges: (parent, child) node indices.
    """

    nodes: list[GraphNode]
    rank: dict[int, int] = field(default_factory=dict)
    column: dict[int, float] = field(default_factory=dict)
    edges: list[tuple[int, int]] = field(default_factory=list)


def _visible(graph: LayerGraph) -> list[GraphNode]:
    alias: dict[int, list[int]] = {}
    kept: list[GraphNode] = []
    for node in graph.nodes:
        parents = [q for p in node.parents for q in alias.get(p, [p])]
        if node.kind == "layer" and node.type in _HIDDEN_TYPES and len(parents) == 1:
            alias[node.index] = parents
            continue
        kept.append(
            GraphNode(
                node.index,
                node.name,
                node.kind,
                node.type,
                list(dict.fromkeys(parents)),
                node.input_shapes,
                node.output_shape,
                node.params,
            )
        )
    return kept


def layout_graph(graph: LayerGraph) -> DiagramLayout:
    """Rows and columns for every visible node of ``graph`` (see the module docstring)."""
    nodes = _visible(graph)
    layout = DiagramLayout(nodes)
    children: dict[int, list[int]] = {n.index: [] for n in nodes}
    for n in nodes:
        for p in n.parents:
            children[p].append(n.index)
            layout.edges.append((p, n.index))
        layout.rank[n.index] = max((layout.rank[p] + 1 for p in n.parents), default=0)
    single_parent = {n.index for n in nodes if len(n.parents) == 1}
    for n in nodes:
        if not n.parents:
            layout.column[n.index] = 0.0
        elif len(n.parents) == 1:
            siblings = [c for c in children[n.parents[0]] if c in single_parent]
            i, k = siblings.index(n.index), len(siblings)
            layout.column[n.index] = layout.column[n.parents[0]] + i - (k - 1) / 2
        else:
            layout.column[n.index] = sum(layout.column[p] for p in n.parents) / len(n.parents)
        # Boxes in one row must not overlap: push this one right of any neighbour too close.
        row = sorted(
            layout.column[m]
            for m, r in layout.rank.items()
            if r == layout.rank[n.index] and m != n.index and m in layout.column
        )
        for other in row:
            if abs(other - layout.column[n.index]) < 1:
                layout.column[n.index] = other + 1
    return layout


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    if not shapes:
        return "-"
    if len(shapes) > 1 and all(s == shapes[0] for s in shapes):
        return f"{len(shapes)}× {_shape(shapes[0])}"
    return ", ".join(_shape(s) for s in shapes)


def _lines(node: GraphNode) -> tuple[str, str, str]:
    if node.kind == "input":
        return f"input : {node.type}", f"shape: {_shape(node.output_shape)}", ""
    title = node.name if node.kind == "op" else f"{node.name} : {node.type}"
    shapes = f"in: {_shapes(node.input_shapes)}  →  out: {_shape(node.output_shape)}"
    params = f"params: {node.params:,}" if node.kind == "layer" else "(function)"
    return title, shapes, params


def _colour(node: GraphNode) -> str:
    if node.kind == "input":
        return _INPUT_COLOUR
    if node.kind == "op":
        return _OP_COLOUR
    lowered = node.type.lower()
    for keys, colour in _COLOURS:
        if any(k in lowered for k in keys):
            return colour
    return "#f3f3f3"


def plot_diagram(graph: LayerGraph, title: str | None = None) -> Figure:
    """Draw a traced graph: one box per visible node, one arrow per edge.

    Args:
        graph: from :func:`cnnkit.inspect.features.trace_graph`.
        title: figure title (default: model name, input and parameter count).

    Returns:
        Figure whose single axes holds one ``FancyBboxPatch`` per visible node (in node
        order) and one arrow annotation per edge.
    """
    layout = layout_graph(graph)
    texts = {n.index: _lines(n) for n in layout.nodes}
    longest = max(len(t) for lines in texts.values() for t in lines)
    box_w = max(2.4, longest * _CHAR_W + 0.3)
    step = box_w + _COL_GAP
    lo = min(layout.column.values())
    hi = max(layout.column.values())
    rows = max(layout.rank.values()) + 1

    def cx(i: int) -> float:
        return 0.3 + (layout.column[i] - lo) * step + box_w / 2

    def top(i: int) -> float:
        return 0.75 + layout.rank[i] * _ROW

    occupied: dict[int, list[float]] = {}
    for n in layout.nodes:
        occupied.setdefault(layout.rank[n.index], []).append(layout.column[n.index])

    # Arrows that skip rows and whose column is taken go round the right side, in lanes.
    side: list[tuple[int, int]] = []
    for p, c in layout.edges:
        span = range(layout.rank[p] + 1, layout.rank[c])
        if len(span) and any(abs(col - layout.column[p]) < 0.9 for r in span for col in occupied.get(r, [])):
            side.append((p, c))
    lanes: dict[tuple[int, int], int] = {}
    lane_end: list[int] = []
    for p, c in sorted(side, key=lambda e: (layout.rank[e[0]], layout.rank[e[1]])):
        for lane, end in enumerate(lane_end):
            if end <= layout.rank[p]:
                lanes[(p, c)] = lane
                lane_end[lane] = layout.rank[c]
                break
        else:
            lanes[(p, c)] = len(lane_end)
            lane_end.append(layout.rank[c])
    total = sum(n.params for n in graph.nodes if n.kind == "layer")
    c, h, w = graph.input_shape
    title = title or f"{graph.model}   input {h}x{w}x{c} (HxWxC)   {total:,} parameters\n{SHAPES_NOTE}"
    width = 0.6 + (hi - lo) * step + box_w + 0.3 + 0.18 * len(lane_end)
    height = 0.9 + rows * _ROW
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    heading = ax.text(
        0.3,
        0.35,
        title,
        fontsize=_FONT + 2,
        fontweight="bold",
        va="center",
    )
    # Widen the figure if the title is longer than the boxes are wide (data units are inches).
    title_w = heading.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi
    if 0.6 + title_w > width:
        width = 0.6 + title_w
        fig.set_size_inches(width, height)
        ax.set_xlim(0, width)
    for n in layout.nodes:
        x0, y0 = cx(n.index) - box_w / 2, top(n.index)
        ax.add_patch(
            FancyBboxPatch(
                (x0, y0),
                box_w,
                _BOX_H,
                boxstyle="round,pad=0,rounding_size=0.05",
                facecolor=_colour(n),
                edgecolor="#555555",
                linewidth=0.7,
            )
        )
        first, second, third = texts[n.index]
        ax.text(cx(n.index), y0 + 0.15, first, ha="center", va="center", fontsize=_FONT, fontweight="bold")
        ax.text(cx(n.index), y0 + 0.33, second, ha="center", va="center", fontsize=_FONT)
        ax.text(cx(n.index), y0 + 0.50, third, ha="center", va="center", fontsize=_FONT, color="#444444")
    arrow = {
        "arrowstyle": "-|>",
        "color": "#333333",
        "linewidth": 0.8,
        "shrinkA": 0,
        "shrinkB": 0,
        "mutation_scale": 8,
    }
    for p, c in layout.edges:
        start = (cx(p), top(p) + _BOX_H)
        end = (cx(c), top(c))
        if (p, c) in lanes:
            right = max(cx(m) for m in layout.column if layout.rank[p] <= layout.rank[m] <= layout.rank[c])
            lane_x = right + box_w / 2 + 0.15 + 0.18 * lanes[(p, c)]
            y1, y2 = top(p) + _BOX_H / 2, top(c) + _BOX_H / 2
            ax.plot([cx(p) + box_w / 2, lane_x, lane_x], [y1, y1, y2], color="#333333", linewidth=0.8)
            ax.annotate("", xy=(cx(c) + box_w / 2, y2), xytext=(lane_x, y2), arrowprops=arrow)
        elif layout.rank[c] - layout.rank[p] > 1:
            bend = (cx(p), top(c) - (_ROW - _BOX_H))
            ax.plot([start[0], bend[0]], [start[1], bend[1]], color="#333333", linewidth=0.8)
            ax.annotate("", xy=end, xytext=bend, arrowprops=arrow)
        else:
            ax.annotate("", xy=end, xytext=start, arrowprops=arrow)
    return fig


def plot_model_diagram(
    model: nn.Module, input_shape: tuple[int, int, int] | str, name: str | None = None
) -> tuple[Figure, LayerGraph]:
    """Trace ``model`` on one zero input of ``input_shape`` and draw it.

    Returns:
        (figure, graph); save the figure with :func:`save_diagram`.
    """
    graph = trace_graph(model, input_shape, name)
    return plot_diagram(graph), graph


def diagram_dpi(fig: Figure, max_pixels: int = 30_000, dpi: float = 100) -> float:
    """A PNG resolution that keeps the longer side of a tall diagram under ``max_pixels``."""
    return min(dpi, max_pixels / max(fig.get_size_inches()))


def save_diagram(fig: Figure, path: str | os.PathLike[str], dpi: float = 100) -> Path:
    """Save a diagram as .svg or .png (PNG resolution capped for very deep models)."""
    return save_figure(fig, path, dpi=diagram_dpi(fig, dpi=dpi))
