"""Feature-map grids: every tile is one channel of the layer's real output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.errors import UsageError
from cnnkit.models import create_model
from cnnkit.viz import feature_maps, plot_feature_maps, plot_layer_maps, to_model_input


def test_course_ankle_boot_maps_at_conv1_and_conv2(tiny_run, fashion):
    _, test = fashion
    boot = test.images[0]
    assert test.class_names[int(test.labels[0])] == "Ankle boot"  # the course's example
    model = tiny_run.model
    x = to_model_input(boot)
    fig = plot_layer_maps(model, x, ["features.conv1", "features.conv2"], image=boot)
    header, first, second = fig.subfigs
    assert len(header.axes) == 1  # the input
    # Independent reference: the course CNN's first layers written out with F.conv2d.
    conv1 = F.relu(F.conv2d(x, model.features.conv1.weight, model.features.conv1.bias, padding=1))
    conv2 = F.relu(
        F.conv2d(F.max_pool2d(conv1, 2), model.features.conv2.weight, model.features.conv2.bias, padding=1)
    )
    for sub, expected in ((first, conv1[0]), (second, conv2[0])):
        axes = [ax for ax in sub.axes if ax.images]
        assert len(axes) == expected.shape[0]  # 32 maps, then 64
        for k, ax in enumerate(axes):
            shown = np.asarray(ax.images[0].get_array())
            assert shown.shape == tuple(expected.shape[1:])  # 28×28, then 14×14
            np.testing.assert_allclose(shown, expected[k].detach().numpy(), atol=1e-5)
    assert "32 maps of 28×28" in first._suptitle.get_text()
    assert "64 maps of 14×14" in second._suptitle.get_text()


def test_every_conv_layer_of_a_non_sequential_model():
    model = create_model("resnet18", num_classes=10).eval()
    x = torch.rand(1, 3, 32, 32)
    maps = feature_maps(model, x, max_layers=None)  # every conv layer
    assert len(maps) == 20  # 1 stem + 16 in the blocks + 3 projections (He et al., 2015)
    # By default 8 of the 20, evenly spread: indices round(k · 19 / 7), first and last included.
    every = list(maps)
    picked = list(feature_maps(model, x))
    assert picked == [every[i] for i in (0, 3, 5, 8, 11, 14, 16, 19)]
    assert picked[0] == "conv1" and picked[-1] == "layer4.1.conv2"
    assert list(feature_maps(model, x, max_layers=20)) == every
    # Reference by hand through the stem and the first block's first conv.
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        expected = model.layer1[0].conv1(h)[0]
    torch.testing.assert_close(maps["layer1.0.conv1"], expected)
    assert maps["layer4.1.conv2"].shape == (512, 1, 1)
    fig = plot_feature_maps({"layer3.0.conv1": maps["layer3.0.conv1"]}, max_maps=40)
    (sub,) = fig.subfigs
    assert len([ax for ax in sub.axes if ax.images]) == 40
    assert "first 40 of 256" in sub._suptitle.get_text()


def test_unknown_layer_lists_the_valid_names(tiny_run):
    with pytest.raises(UsageError) as info:
        feature_maps(tiny_run.model, torch.zeros(1, 1, 28, 28), ["features.conv3"])
    message = str(info.value)
    assert "did you mean features.conv2" in message
    assert "features.conv1, features.pool1, features.conv2, features.pool2, head.flatten" in message
