"""Layer lookup by summary name, forward-hook capture and graph tracing on real models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import UsageError
from cnnkit.inspect import summary
from cnnkit.inspect.features import (
    capture_outputs,
    conv_layer_names,
    default_cam_layer,
    get_layer,
    layer_names,
    record_outputs,
    trace_graph,
    weight_layer_names,
)
from cnnkit.models import create_model


def test_layer_names_are_the_summary_rows():
    hongong = create_model("hongong_cnn")
    assert layer_names(hongong) == summary(hongong, (1, 28, 28)).layer_names()
    for name, shape in (("resnet18", (3, 32, 32)),):
        model = create_model(name, num_classes=10)
        # summary lists the layers a forward pass ran (in run order, shared ones repeated);
        # layer_names lists the same layers from the module tree, each once.
        assert set(summary(model, shape).layer_names()) == set(layer_names(model))


def test_get_layer_finds_summary_names_and_stages_and_explains_typos():
    model = create_model("resnet18", num_classes=10)
    assert get_layer(model, "layer1.0.conv1") is model.layer1[0].conv1
    assert get_layer(model, "layer4") is model.layer4  # a feature_info stage (a container)
    with pytest.raises(UsageError) as info:
        get_layer(model, "layer1.0.conv3")
    message = str(info.value)
    assert "unknown layer 'layer1.0.conv3'" in message and "did you mean layer1.0.conv2" in message
    valid = message.split("valid layers (as in `cnnkit summary`): ")[1]
    assert valid.startswith(", ".join(layer_names(model)))  # every name `cnnkit summary` shows
    assert valid.endswith("(stages: layer1, layer2, layer3, layer4)")
    with pytest.raises(UsageError, match="valid layers"):
        get_layer(model, "")


def test_conv_and_weight_layers():
    hongong = create_model("hongong_cnn")
    assert conv_layer_names(hongong) == ["features.conv1", "features.conv2"]
    assert weight_layer_names(hongong) == [
        "features.conv1",
        "features.conv2",
        "head.dense1",
        "head.classifier",
    ]
    assert len(conv_layer_names(create_model("resnet18"))) == 20  # 1 + 16 + 3 projections
    assert default_cam_layer(hongong) == "features.pool2"  # last feature_info stage
    assert default_cam_layer(create_model("resnet18")) == "layer4"
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Flatten())
    assert default_cam_layer(plain) == "2"  # no stages: the last conv layer
    with pytest.raises(UsageError, match="no feature_info and no conv layer"):
        default_cam_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_captured_outputs_match_the_layers_written_out():
    torch.manual_seed(0)
    model = create_model("hongong_cnn").eval()
    x = torch.rand(2, 1, 28, 28)
    out = capture_outputs(model, x, ["features.conv1", "features.pool2", "head.dense1"])
    conv1 = F.relu(F.conv2d(x, model.features.conv1.weight, model.features.conv1.bias, padding=1))
    torch.testing.assert_close(out["features.conv1"], conv1)
    conv2 = F.relu(
        F.conv2d(F.max_pool2d(conv1, 2), model.features.conv2.weight, model.features.conv2.bias, padding=1)
    )
    pool2 = F.max_pool2d(conv2, 2)
    torch.testing.assert_close(out["features.pool2"], pool2)
    dense = F.relu(F.linear(pool2.flatten(1), model.head.dense1.weight, model.head.dense1.bias))
    torch.testing.assert_close(out["head.dense1"], dense)
    assert not any(m._forward_hooks for m in model.modules())  # hooks are removed afterwards


def test_record_outputs_keeps_the_graph_when_asked_and_always_unhooks():
    model = create_model("hongong_cnn")
    x = torch.rand(1, 1, 28, 28)
    with record_outputs(model, ["features.conv2"], detach=False) as outs:
        model(x).sum().backward()
    assert outs["features.conv2"].requires_grad
    with pytest.raises(RuntimeError), record_outputs(model, ["features.conv1"]):
        raise RuntimeError("the forward pass failed")
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(UsageError, match="did not run"):
        capture_outputs(model, x, ["head"])  # a container whose forward is never called


def test_trace_graph_of_googlenet_concatenates_four_branches():
    model = create_model("googlenet", num_classes=10)
    graph = trace_graph(model, (3, 64, 64))
    cats = graph.by_name("cat")
    assert len(cats) == 9  # inception 3a-3b, 4a-4e, 5a-5b (Szegedy et al., 2014)
    by = {n.index: n for n in graph.nodes}
    for cat in cats:
        assert len(cat.parents) == 4
        assert sum(s[0] for s in cat.input_shapes) == cat.output_shape[0]
        sources = {by[p].name.split(".")[0] for p in cat.parents if by[p].kind == "layer"}
        assert len(sources) <= 1  # all four branches belong to one inception block
    assert graph.nodes[-1].output_shape == (10,)
    with pytest.raises(UsageError, match="cannot take input"):
        trace_graph(create_model("hongong_cnn"), (1, 20, 20))
