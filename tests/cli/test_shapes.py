"""`--input` as both camps write it, and one display convention of shapes, against PyTorch."""

from __future__ import annotations

import ast

import pytest
import torch
from torch import nn

from cnnkit.cli.__main__ import main
from cnnkit.inspect.summary import SHAPES_NOTE


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> dict[str, tuple[int, ...]]:
    """`cnnkit shape` rows: layer -> output shape."""
    found = {}
    for line in out.splitlines():
        if "(" in line and not line.startswith("input "):
            layer, rest = line.split(None, 1)
            found[layer] = ast.literal_eval(rest[: rest.index(")") + 1])
    return found


def test_the_shape_help_example_runs_and_matches_pytorch(capsys):
    code, out, _ = run(capsys, "shape", "28x28x1", "conv:32:3:same", "pool:2")
    assert code == 0 and SHAPES_NOTE in out.splitlines()[0]
    x = torch.zeros(1, 1, 28, 28)
    conv = nn.Conv2d(1, 32, 3, padding="same")
    y = conv(x)
    shapes = rows(out)
    assert shapes["conv:32:3:same"] == tuple(y.shape[1:])
    assert shapes["pool:2"] == tuple(nn.MaxPool2d(2)(y).shape[1:])
    assert "320" in out  # 3*3*1*32 + 32 parameters, as PyTorch counts them
    assert sum(p.numel() for p in conv.parameters()) == 320


def test_stride_and_padding_fields():
    from cnnkit.cli.shape import walk

    # Géron: 70x120 input, 7x7 stride-2 'same' conv -> ceil(70 / 2) x ceil(120 / 2)
    assert walk((3, 70, 120), ["conv:32:7:2:same"])[0][1] == (32, 35, 60)
    assert walk((3, 70, 120), ["conv:32:7:same"])[0][1] == (32, 70, 120)
    assert walk((1, 28, 28), ["conv:8:3:1"])[0][1] == (8, 26, 26)


@pytest.mark.parametrize("text", ["28x28x1", "28x28", "1x28x28"])
def test_three_ways_to_write_the_input(capsys, text):
    code, out, err = run(capsys, "summary", "hongong_cnn", "--input", text)
    assert code == 0 and "Total params: 333,526" in out and "input 28x28x1 (HxWxC)" in out
    if text == "1x28x28":
        assert err.count("\n") == 1 and "as CxHxW" in err and "28x28x1" in err
    else:
        assert err == ""


def test_an_impossible_input_names_the_layer_and_a_fix_that_works(capsys):
    code, _, err = run(capsys, "summary", "alexnet", "--input", "32x32x3")
    assert code == 2 and err.count("\n") == 1
    # PyTorch's own AlexNet stops at the same layer: the third max-pool gets a 2x2 map.
    assert "at layer features.7 (MaxPool2d, input shape (256, 2, 2))" in err
    fix = err.split("--input ")[-1].strip()
    code, out, _ = run(capsys, "summary", "alexnet", "--input", fix)
    assert code == 0 and "Total params" in out


def test_one_convention_in_summary_shape_and_diagram(capsys):
    _, summary_out, _ = run(capsys, "summary", "hongong_cnn")
    _, shape_out, _ = run(capsys, "shape", "28x28x1", "conv:32:3:same")
    assert SHAPES_NOTE in summary_out.splitlines()[0] and SHAPES_NOTE in shape_out.splitlines()[0]
    conv1 = next(line for line in summary_out.splitlines() if line.startswith("features.conv1 "))
    assert str(rows(shape_out)["conv:32:3:same"]) in conv1  # (32, 28, 28) in both

    from cnnkit import create_model
    from cnnkit.inspect.features import trace_graph
    from cnnkit.viz.diagram import plot_diagram

    fig = plot_diagram(trace_graph(create_model("hongong_cnn"), (1, 28, 28)))
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    assert any(SHAPES_NOTE in t for t in texts)
    assert any("out: (32, 28, 28)" in t for t in texts)
