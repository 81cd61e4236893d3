"""Architecture diagrams: boxes, arrows and shapes follow the traced data flow."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import torch
from matplotlib.patches import FancyBboxPatch
from PIL import Image
from torch import nn

from cnnkit.inspect import summary
from cnnkit.inspect.features import trace_graph
from cnnkit.models import create_model
from cnnkit.viz import layout_graph, plot_diagram, plot_model_diagram, save_diagram


def boxes(fig) -> list[FancyBboxPatch]:
    return [p for p in fig.axes[0].patches if isinstance(p, FancyBboxPatch)]


def arrows(fig) -> list:
    return [t for t in fig.axes[0].texts if getattr(t, "arrow_patch", None) is not None]


def test_course_cnn_is_a_chain_of_boxes_with_the_summary_shapes(tmp_path):
    model = create_model("hongong_cnn")
    fig, graph = plot_model_diagram(model, (1, 28, 28), "hongong_cnn")
    rows = summary(model, (1, 28, 28)).rows
    assert [n.name for n in graph.nodes] == ["input"] + [r.name for r in rows]
    assert len(boxes(fig)) == len(rows) + 1
    assert len(arrows(fig)) == len(rows)  # a chain: one arrow into every layer
    texts = [t.get_text() for t in fig.axes[0].texts]
    for r in rows:
        assert f"{r.name} : {r.type}" in texts
        assert any(t.endswith(f"out: ({', '.join(map(str, r.output_shape))})") for t in texts)
        assert f"params: {r.params:,}" in texts
    assert "in: (3136)  →  out: (100)" in texts  # dense1's input is the flattened 7×7×64
    assert "333,526 parameters" in texts[0]
    png, svg = save_diagram(fig, tmp_path / "d.png"), save_diagram(fig, tmp_path / "d.svg")
    assert Image.open(png).format == "PNG"
    root = ET.parse(svg).getroot()  # well-formed SVG of vector shapes, no raster image inside
    assert root.tag.endswith("svg") and not root.findall(".//{http://www.w3.org/2000/svg}image")


class Branchy(nn.Module):
    """A residual unit and a two-branch concatenation, written with functional glue."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1)
        self.left = nn.Conv2d(8, 4, 1)
        self.right = nn.Conv2d(8, 6, 3, padding=1)
        self.head = nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        skip = x
        x = self.conv_b(torch.relu(self.conv_a(x)))
        x += skip  # in place, as many ResNets write it
        assert torch.isfinite(x).all()  # a check whose result feeds nothing: not drawn
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.head(x.mean(dim=(2, 3)))


def test_residual_and_concatenation_are_drawn_as_branches():
    graph = trace_graph(Branchy(), (3, 16, 16))
    names = [n.name for n in graph.nodes]
    expected = [
        "input",
        "stem",
        "relu",
        "conv_a",
        "relu",
        "conv_b",
        "add",
        "left",
        "right",
        "cat",
        "mean",
        "head",
    ]
    assert names == expected
    by = {n.index: n for n in graph.nodes}
    add = graph.by_name("add")[0]
    assert [by[p].name for p in add.parents] == ["conv_b", "relu"]  # the main path and the skip
    assert add.parents[1] == graph.nodes[2].index  # the skip comes from the first relu
    cat = graph.by_name("cat")[0]
    assert [by[p].name for p in cat.parents] == ["left", "right"]
    assert cat.input_shapes == [(4, 16, 16), (6, 16, 16)] and cat.output_shape == (10, 16, 16)
    assert graph.children(add.index) == [graph.by_name("left")[0].index, graph.by_name("right")[0].index]
    layout = layout_graph(graph)
    left, right = graph.by_name("left")[0].index, graph.by_name("right")[0].index
    assert layout.rank[left] == layout.rank[right]  # side by side
    assert layout.column[left] < layout.column[right]
    assert layout.column[cat.index] == (layout.column[left] + layout.column[right]) / 2
    fig = plot_diagram(graph)
    assert len(boxes(fig)) == len(graph.nodes) and len(arrows(fig)) == len(graph.edges())


def test_resnet_units_add_the_main_path_and_the_shortcut():
    model = create_model("resnet18", num_classes=10)
    graph = trace_graph(model, (3, 32, 32))
    adds = graph.by_name("add")
    assert len(adds) == 8  # one per basic block
    by = {n.index: n for n in graph.nodes}
    parents = [sorted(by[p].name for p in a.parents) for a in adds]
    assert parents[0] == ["layer1.0.bn2", "maxpool"]  # identity shortcut from the stem
    assert parents[2] == ["layer2.0.bn2", "layer2.0.downsample.1"]  # projection shortcut
    assert all(a.input_shapes[0] == a.input_shapes[1] == a.output_shape for a in adds)
    layout = layout_graph(graph)
    bn2, proj = graph.by_name("layer2.0.bn2")[0], graph.by_name("layer2.0.downsample.1")[0]
    assert layout.column[bn2.index] != layout.column[proj.index]  # two branches, side by side
