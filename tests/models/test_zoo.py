"""Every registered model against the pinned table, and the backbone interface on each.

Two builds per model, each made once per module (module-scoped fixtures; pytest groups the tests
by model, so only one model of each kind is alive at a time):

- ``default``: the builder's defaults (ImageNet models with 1000 classes), for the pinned counts
  and one forward/backward at a small input its architecture accepts;
- ``fashion``: 10 classes, 1 channel, ``small_input=True`` where the builder has it, on
  Fashion-MNIST-sized 28×28×1 batches.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

from cnnkit.models import Backbone, create_model, list_models, model_entry


class Pinned(NamedTuple):
    """One row of the table.

    params: sum of ``p.numel()`` over ``model.parameters()`` with the builder's defaults.
    test_side: a small square input the default architecture accepts (keeps the tests fast).
    keras_total: for Keras ports, Keras' "Total params", which also counts every batch norm's
        moving mean and moving variance (non-trainable in Keras, buffers in PyTorch).
    """

    params: int
    test_side: int
    keras_total: int | None = None


# Published counts: torchvision's model docs (``num_params``) for resnet*, vgg*, googlenet and
# alexnet_tv; timm's seresnet50; keras.applications for Xception; the papers' layer tables for
# lenet5 (LeNet-5 with a 10-way linear output) and alexnet (single tower, 1000 classes).
PINNED: dict[str, Pinned] = {
    "lenet5": Pinned(61_706, 32),
    "alexnet": Pinned(62_378_344, 67),  # (67 - 11) / 4 + 1 = 15 -> 7 -> 7 -> 3 -> 3 -> 1
    "alexnet_tv": Pinned(61_100_840, 63),
    "googlenet": Pinned(6_624_904, 32),
    "vgg11": Pinned(132_863_336, 32),
    "vgg13": Pinned(133_047_848, 32),
    "vgg16": Pinned(138_357_544, 32),
    "vgg19": Pinned(143_667_240, 32),
    "vgg11_bn": Pinned(132_868_840, 32),
    "vgg13_bn": Pinned(133_053_736, 32),
    "vgg16_bn": Pinned(138_365_992, 32),
    "vgg19_bn": Pinned(143_678_248, 32),
    "resnet18": Pinned(11_689_512, 32),
    "resnet34": Pinned(21_797_672, 32),
    "resnet50": Pinned(25_557_032, 32),
    "resnet101": Pinned(44_549_160, 32),
    "resnet152": Pinned(60_192_808, 32),
    "seresnet18": Pinned(11_778_592, 32),
    "seresnet34": Pinned(21_958_868, 32),
    "seresnet50": Pinned(28_088_024, 32),
    "seresnet101": Pinned(49_326_872, 32),
    "seresnet152": Pinned(66_821_848, 32),
    # Keras: 22,910,480 total = 22,855,952 trainable + 54,528 BN moving mean/variance.
    "xception": Pinned(22_855_952, 71, keras_total=22_910_480),
    # timm's tf_efficientnet_lite0..4 (also compared layer by layer in test_efficientnet_lite.py).
    "efficientnet_lite0": Pinned(4_652_008, 32),
    "efficientnet_lite1": Pinned(5_416_680, 32),
    "efficientnet_lite2": Pinned(6_092_072, 32),
    "efficientnet_lite3": Pinned(8_197_096, 32),
    "efficientnet_lite4": Pinned(13_006_568, 32),
    # The course's own CNNs (their books' numbers; also tested in tests/test_models_seed.py).
    "hongong_cnn": Pinned(333_526, 28),
    "geron_fashion_cnn": Pinned(1_413_834, 28),
    "exercise_cnn": Pinned(903_400, 32),
    # cnnkit's fast-preset CNN (models/fast_cnn.py): no published number, pinned from its layers:
    # convs 288 + 18,432 + 73,728, batch norms 2 × (32 + 64 + 128), dense 128 × 10 + 10.
    "fashion_bn_cnn": Pinned(94_186, 28),
}

NAMES = list_models()


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_bn_moving_stats(model: torch.nn.Module) -> int:
    return sum(
        buf.numel() for name, buf in model.named_buffers() if name.endswith(("running_mean", "running_var"))
    )


def fashion_kwargs(name: str) -> dict[str, object]:
    kwargs: dict[str, object] = {"num_classes": 10, "in_chans": 1}
    if model_entry(name).small_input:
        kwargs["small_input"] = True
    return kwargs


@pytest.fixture(scope="module", params=NAMES)
def default(request: pytest.FixtureRequest) -> tuple[str, Backbone]:
    torch.manual_seed(0)
    return request.param, create_model(request.param)


@pytest.fixture(scope="module", params=NAMES)
def fashion(request: pytest.FixtureRequest) -> tuple[str, Backbone]:
    torch.manual_seed(0)
    return request.param, create_model(request.param, **fashion_kwargs(request.param))


# EfficientNet's projection batch-norm shift reaches the loss only through 1×1 convs followed by
# train-mode batch norms (the residual adds it, the next stage's expansion conv + BN removes any
# per-channel constant), so its gradient is zero in exact arithmetic; rounding usually leaves a
# trace, but not on 2×2 maps. timm's tf_efficientnet_lite* behaves the same.
DEAD_IN_TRAIN_MODE = re.compile(r"^stages\.\d+\.\d+\.project\.bn\.bias$")


def check_training_step(model: Backbone, x: torch.Tensor) -> None:
    """One SGD step: finite loss, and every parameter receives a finite, non-zero gradient."""
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    if out.dim() == 2:
        loss = F.cross_entropy(out, torch.arange(len(out)) % out.shape[1])
    else:  # a headless model (num_classes=0) returns its feature map
        loss = out.square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        # A sum is non-finite iff some element is; cheaper than isfinite() on VGG's 100 M weights.
        assert torch.isfinite(param.grad.sum()), f"{name} has a non-finite gradient"
        if not DEAD_IN_TRAIN_MODE.match(name):
            assert param.grad.any(), f"{name} has an all-zero gradient"
    before = next(model.parameters()).detach().clone()
    torch.optim.SGD(model.parameters(), lr=1e-3).step()
    assert not torch.equal(before, next(model.parameters()))
    model.zero_grad(set_to_none=True)


def check_feature_info(model: Backbone, in_chans: int, side: int) -> None:
    """feature_info against the real stage outputs.

    One rectangular input, side × (side + D) with D a multiple of every stride: each stage's
    output must then be exactly D / stride pixels wider than it is high (floor, ceil and 'same'
    arithmetic all give that), and have the stated channels.
    """
    info = model.feature_info
    assert info, "feature_info is empty"
    strides = [stage.stride for stage in info]
    assert strides == sorted(strides), f"strides must not decrease: {strides}"
    assert len({stage.name for stage in info}) == len(info), "feature_info names repeat"
    extra = math.lcm(*strides)
    model.eval()
    with torch.no_grad():
        outputs = model.forward_stages(torch.randn(2, in_chans, side, side + extra))
    assert len(outputs) == len(info)
    for stage, out in zip(info, outputs):
        assert out.dim() == 4 and out.shape[0] == 2, f"{stage.name}: shape {tuple(out.shape)}"
        assert out.shape[1] == stage.channels, f"{stage.name}: {out.shape[1]} channels, {stage}"
        height, width = out.shape[-2:]
        assert height >= 1 and (width - height) * stage.stride == extra, (
            f"{stage.name}: {tuple(out.shape)} from a {side}x{side + extra} input, {stage}"
        )


# ---- the pinned table --------------------------------------------------------------------


def test_every_registered_model_is_pinned():
    assert set(PINNED) == set(NAMES)


def test_docs_table_lists_every_model_with_its_count():
    text = (Path(__file__).parents[2] / "docs" / "models.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| ([\d,]+)", text, flags=re.MULTILINE))
    assert set(rows) == set(NAMES)
    for name, params in rows.items():
        assert int(params.replace(",", "")) == PINNED[name].params, name


def test_parameter_count(default):
    name, model = default
    assert count_params(model) == PINNED[name].params
    if PINNED[name].keras_total is not None:
        assert count_params(model) + count_bn_moving_stats(model) == PINNED[name].keras_total


def test_default_input_is_the_registered_one(default):
    name, model = default
    assert model.default_input == model_entry(name).input_size


# ---- the default architecture at a small input -------------------------------------------


def test_forward_shape_and_values(default):
    name, model = default
    in_chans, side = model.default_input[0], PINNED[name].test_side
    x = torch.randn(2, in_chans, side, side)
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        out = model.forward_head(features)
        pre_logits = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(model(x), out)
    assert torch.isfinite(out).all()
    if model.num_classes:
        assert out.shape == (2, model.num_classes)
        assert pre_logits.shape == (2, model.num_features)
    else:  # headless by default (exercise_cnn): features come straight out
        assert out.shape[:2] == (2, model.num_features)


def test_training_step_reaches_every_parameter(default):
    name, model = default
    check_training_step(model, torch.randn(2, model.default_input[0], *[PINNED[name].test_side] * 2))


def test_feature_info_matches_stage_outputs(default):
    name, model = default
    check_feature_info(model, model.default_input[0], PINNED[name].test_side)


def test_imagenet_models_expose_stride_8_16_32_maps(default):
    name, model = default
    if model_entry(name).input_size[1] < 224:
        assert model.feature_info  # small-image models: checked by the test above
        return
    strides = {stage.stride for stage in model.feature_info}
    assert {8, 16, 32} <= strides, f"{name}: strides {sorted(strides)}"


# ---- on Fashion-MNIST-sized input --------------------------------------------------------


def test_runs_on_28x28x1(fashion):
    name, model = fashion
    if model_entry(name).small_input:
        assert model.default_input == (1, 28, 28)
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        out = model(x)
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
    assert out.shape == (2, 10)
    assert pre_logits.shape == (2, model.num_features)
    assert torch.isfinite(out).all()


def test_training_step_on_28x28x1(fashion):
    _, model = fashion
    check_training_step(model, torch.randn(2, 1, 28, 28))


def test_feature_info_on_28x28x1(fashion):
    _, model = fashion
    check_feature_info(model, 1, 28)


def test_reset_classifier(fashion):
    _, model = fashion
    x = torch.randn(2, 1, 28, 28)
    width = model.num_features
    old = {id(p) for p in model.parameters()}
    params_with_10 = count_params(model)
    try:
        model.reset_classifier(5)
        assert model.num_classes == 5
        assert count_params(model) == params_with_10 - (width + 1) * 10 + (width + 1) * 5
        model.eval()
        with torch.no_grad():
            features = model.forward_features(x)
            assert model(x).shape == (2, 5)
        # The new classifier is trainable (the frozen-backbone step of transfer learning).
        model.train()
        new = [p for p in model.parameters() if id(p) not in old]
        loss = F.cross_entropy(model.forward_head(features), torch.tensor([0, 4]))
        assert new and all(grad.any() for grad in torch.autograd.grad(loss, new))

        model.reset_classifier(0)
        assert model.num_classes == 0
        assert count_params(model) == params_with_10 - (width + 1) * 10
        model.eval()
        with torch.no_grad():
            pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
            torch.testing.assert_close(model(x), pre_logits)
        assert pre_logits.shape == (2, width)
        with pytest.raises(ValueError, match="num_classes"):
            model.reset_classifier(-1)
    finally:
        # The model is shared with the other tests of this module.
        model.reset_classifier(10)
