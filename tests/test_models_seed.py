"""The course's own CNNs: pinned parameter counts and shapes from the books."""

from __future__ import annotations

import pytest
import torch

from cnnkit import create_model, list_models
from cnnkit.models import model_entry, register_model


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_hongong_cnn_333526_with_per_layer_counts():
    model = create_model("hongong_cnn")
    assert count(model) == 333_526
    per_layer = [
        sum(p.numel() for p in m.parameters())
        for m in (model.features.conv1, model.features.conv2, model.head.dense1, model.head.classifier)
    ]
    assert per_layer == [320, 18_496, 313_700, 1_010]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_geron_fashion_cnn_1413834():
    model = create_model("geron_fashion_cnn")
    assert count(model) == 1_413_834
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_exercise_cnn_903400_and_stage_shapes():
    model = create_model("exercise_cnn")
    assert count(model) == 903_400
    stages = model.forward_stages(torch.zeros(1, 3, 200, 300))
    # NCHW of the course's (100,150,100), (50,75,200), (25,38,400)
    assert [tuple(t.shape[1:]) for t in stages] == [(100, 100, 150), (200, 50, 75), (400, 25, 38)]


def test_backbone_interface_on_course_models():
    for name in ("hongong_cnn", "geron_fashion_cnn"):
        model = create_model(name).eval()
        x = torch.rand(3, 1, 28, 28)
        feats = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (3, model.num_features)
        for info, out in zip(model.feature_info, model.forward_stages(x)):
            assert out.shape[1] == info.channels and out.shape[-1] == 28 // info.stride
        model.reset_classifier(3)
        assert model(x).shape == (3, 3)


def test_registry_errors():
    with pytest.raises(ValueError, match="did you mean hongong_cnn"):
        create_model("hongong_cn")
    with pytest.raises(ValueError, match="does not take 'dropout_rate'"):
        create_model("hongong_cnn", dropout_rate=0.3)
    with pytest.raises(ValueError, match="already registered"):

        def hongong_cnn():
            return None

        register_model(input_size=(1, 28, 28), description="dup")(hongong_cnn)
    assert "hongong_cnn" in list_models("hong*") and list_models("zzz*") == []
    assert model_entry("hongong_cnn").input_size == (1, 28, 28)


def test_options_change_the_model():
    assert create_model("hongong_cnn", num_classes=5)(torch.zeros(1, 1, 28, 28)).shape == (1, 5)
    rgb = create_model("hongong_cnn", in_chans=3, input_size=32)
    assert rgb(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("hongong_cnn", num_classes=-1)
