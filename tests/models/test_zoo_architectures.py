"""Each family against its paper (and the course): layer shapes, per-layer counts, structure."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.layers import AvgPool2D, SeparableConv2D, SqueezeExcite
from cnnkit.models import create_model
from cnnkit.models.googlenet import INCEPTION_SPECS, GoogLeNetOutputs
from cnnkit.models.resnet import BasicBlock, Bottleneck, ResNet
from cnnkit.models.vgg import POOL, VGG_LAYERS


def structure(name: str, **kwargs: object) -> nn.Module:
    """The model on the meta device: modules and shapes without allocating or initialising.

    A forward pass on meta tensors computes every output shape and no value.
    """
    with torch.device("meta"):
        return create_model(name, **kwargs)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def output_shapes(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """(C, H, W) of the named submodules' outputs for one forward pass."""
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))
        )
        for name in names
    ]
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    return shapes


# ---- LeNet-5 -------------------------------------------------------------------------------


def test_lenet5_pads_28x28_to_the_papers_32x32_shapes():
    model = structure("lenet5", small_input=True)
    names = ["features.pad", "features.c1", "features.s2", "features.c3", "features.s4", "features.c5"]
    assert output_shapes(model, names, torch.zeros(2, 1, 28, 28, device="meta")) == {
        "features.pad": (1, 32, 32),
        "features.c1": (6, 28, 28),
        "features.s2": (6, 14, 14),
        "features.c3": (16, 10, 10),
        "features.s4": (16, 5, 5),
        "features.c5": (120, 1, 1),
    }


def test_lenet5_per_layer_counts_tanh_and_plain_average_pooling():
    model = structure("lenet5")
    f, h = model.features, model.head
    per_layer = [count_params(m) for m in (f.c1, f.c3, f.c5, h.f6, h.output)]
    # C3 sees all 6 maps of S2: 16 × (6 × 25 + 1) = 2,416 (the paper's partial wiring has 1,516).
    assert per_layer == [156, 2_416, 48_120, 10_164, 850]
    assert sum(per_layer) == 61_706
    assert isinstance(f.s2, AvgPool2D) and count_params(f.s2) == 0
    assert all(isinstance(m.activation, nn.Tanh) for m in (f.c1, f.c3, f.c5, h.f6))
    assert count_params(structure("lenet5", small_input=True)) == 61_706


# ---- AlexNet --------------------------------------------------------------------------------


def test_alexnet_follows_the_paper_layer_by_layer():
    model = structure("alexnet")
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    pools = [n for n, m in model.named_modules() if isinstance(m, nn.MaxPool2d)]
    shapes = output_shapes(model, convs + pools, torch.zeros(1, 3, 227, 227, device="meta"))
    assert [shapes[n] for n in convs] == [
        (96, 55, 55), (256, 27, 27), (384, 13, 13), (384, 13, 13), (256, 13, 13)
    ]  # fmt: skip
    assert [shapes[n] for n in pools] == [(96, 27, 27), (256, 13, 13), (256, 6, 6)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [count_params(m) for m in model.modules() if isinstance(m, nn.Conv2d)] == [
        34_944, 614_656, 885_120, 1_327_488, 884_992
    ]  # fmt: skip
    assert [count_params(m) for m in linears] == [37_752_832, 16_781_312, 4_097_000]
    dropouts = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.5, 0.5]


def test_alexnet_local_response_norm_after_conv1_and_conv2():
    layers = list(structure("alexnet").features)
    lrn_at = [i for i, m in enumerate(layers) if isinstance(m, nn.LocalResponseNorm)]
    # conv, ReLU, LRN, pool — twice.
    assert [type(layers[i - 2]) for i in lrn_at] == [nn.Conv2d, nn.Conv2d]
    assert [type(layers[i + 1]) for i in lrn_at] == [nn.MaxPool2d, nn.MaxPool2d]
    for i in lrn_at:
        lrn = layers[i]
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in structure("alexnet_tv").modules())


# ---- GoogLeNet ------------------------------------------------------------------------------


def test_inception_widths_from_table_1():
    out = {name: spec.out_channels for name, spec in INCEPTION_SPECS.items()}
    assert out == {
        "inception3a": 256, "inception3b": 480, "inception4a": 512, "inception4b": 512,
        "inception4c": 512, "inception4d": 528, "inception4e": 832, "inception5a": 832,
        "inception5b": 1024,
    }  # fmt: skip


def test_googlenet_stage_sizes_at_224():
    model = structure("googlenet")
    outputs = model.eval().forward_stages(torch.zeros(1, 3, 224, 224, device="meta"))
    assert [tuple(o.shape[1:]) for o in outputs] == [
        (64, 112, 112), (192, 56, 56), (480, 28, 28), (832, 14, 14), (1024, 7, 7)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def googlenet_aux() -> nn.Module:
    torch.manual_seed(0)
    return create_model("googlenet", num_classes=10, in_chans=1, small_input=True, aux_logits=True)


def test_googlenet_with_auxiliary_heads_has_13004888_parameters():
    assert count_params(structure("googlenet", aux_logits=True)) == 13_004_888


def test_googlenet_same_return_types_in_train_and_eval(googlenet_aux):
    x = torch.randn(2, 1, 28, 28)
    for training in (True, False):
        googlenet_aux.train(training)
        with torch.no_grad():
            logits = googlenet_aux(x)
            outputs = googlenet_aux.forward_aux(x)
        assert type(logits) is torch.Tensor and logits.shape == (2, 10)
        assert type(outputs) is GoogLeNetOutputs
        assert outputs.logits.shape == (2, 10)
        assert [a.shape for a in outputs.aux_logits] == [(2, 10), (2, 10)]


def test_googlenet_auxiliary_loss_trains_every_parameter(googlenet_aux):
    googlenet_aux.train()
    googlenet_aux.zero_grad(set_to_none=True)
    outputs = googlenet_aux.forward_aux(torch.randn(2, 1, 28, 28))
    target = torch.tensor([3, 7])
    loss = F.cross_entropy(outputs.logits, target) + 0.3 * sum(
        F.cross_entropy(aux, target) for aux in outputs.aux_logits
    )
    loss.backward()
    for name, param in googlenet_aux.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    googlenet_aux.zero_grad(set_to_none=True)


def test_googlenet_reset_classifier_resets_auxiliary_heads():
    model = create_model("googlenet", num_classes=10, in_chans=1, small_input=True, aux_logits=True)
    model.reset_classifier(7)
    with torch.no_grad():
        outputs = model.eval().forward_aux(torch.randn(2, 1, 28, 28))
    assert [tuple(t.shape) for t in (outputs.logits, *outputs.aux_logits)] == [(2, 7)] * 3


def test_googlenet_without_auxiliary_heads_refuses_forward_aux():
    model = create_model("googlenet", num_classes=10, in_chans=1, small_input=True)
    with pytest.raises(RuntimeError, match="aux_logits=True"):
        model.forward_aux(torch.randn(2, 1, 28, 28))


# ---- VGG ------------------------------------------------------------------------------------


def test_vgg_layer_lists_are_keyed_by_model_name():
    assert set(VGG_LAYERS) == {"vgg11", "vgg13", "vgg16", "vgg19"}
    for name, layers in VGG_LAYERS.items():
        convs = sum(1 for item in layers if item != POOL)
        # The number in the name counts weight layers: the convs plus three dense layers.
        assert convs + 3 == int(name[3:])
        assert layers.count(POOL) == 5


def test_vgg_uses_only_3x3_same_convs_and_2x2_pools():
    model = structure("vgg16_bn")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert {(m.kernel_size, m.stride, m.padding) for m in convs} == {((3, 3), (1, 1), (1, 1))}
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert {(m.kernel_size, m.stride) for m in pools} == {(2, 2)}
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == len(convs) == 13


def test_vgg_starts_from_he_convs_and_small_dense_weights():
    # torchvision's VGG initialisation: He normal convs (std sqrt(2 / fan_out)) with zero biases,
    # BN scale 1 and shift 0, dense weights N(0, 0.01) with zero biases.
    torch.manual_seed(0)
    model = create_model("vgg11_bn")
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        fan_out = conv.out_channels * 9
        assert float(conv.weight.detach().std()) == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
        assert not conv.bias.any()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert bool((bn.weight == 1).all()) and not bn.bias.any()
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in dense] == [(4096, 25088), (4096, 4096), (1000, 4096)]
    for layer in dense:
        assert float(layer.weight.detach().mean()) == pytest.approx(0.0, abs=1e-3)
        assert float(layer.weight.detach().std()) == pytest.approx(0.01, rel=0.02)
        assert not layer.bias.any()


# ---- ResNet / SE-ResNet ---------------------------------------------------------------------


def test_resnet34_is_the_course_resnet34():
    model = structure("resnet34", num_classes=10)
    # Géron's ResNet-34 with a 10-way softmax: 21,289,802 trainable parameters.
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 21_289_802
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert [len(s) for s in stages] == [3, 4, 6, 3]
    assert all(isinstance(unit, BasicBlock) for s in stages for unit in s)
    for index, stage in enumerate(stages):
        for position, unit in enumerate(stage):
            if index > 0 and position == 0:
                conv, bn = unit.downsample
                assert (conv.kernel_size, conv.stride, conv.bias) == ((1, 1), (2, 2), None)
                assert isinstance(bn, nn.BatchNorm2d)
            else:
                assert isinstance(unit.downsample, nn.Identity)
    stem = model.conv1
    assert (stem.kernel_size, stem.stride) == ((7, 7), (2, 2))
    assert isinstance(model.maxpool, nn.MaxPool2d)


def test_resnet_small_input_stem():
    model = structure("resnet18", in_chans=1, small_input=True)
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(model.maxpool, nn.Identity)
    assert [s.stride for s in model.feature_info] == [1, 1, 2, 4, 8]


def test_seresnet50_is_resnet50_plus_se_blocks():
    plain, se = structure("resnet50"), structure("seresnet50")
    assert type(plain) is type(se) is ResNet
    units = [u for stage in (se.layer1, se.layer2, se.layer3, se.layer4) for u in stage]
    assert all(isinstance(u, Bottleneck) and isinstance(u.se, SqueezeExcite) for u in units)
    assert all(isinstance(u.se, nn.Identity) for u in plain.modules() if isinstance(u, Bottleneck))
    for unit in units:
        channels = unit.bn3.num_features
        assert unit.se.fc_reduce.out_features == channels // 16
    # Each SE block: C -> C/16 -> C dense layers with biases = C²/8 + C/16 + C.
    extra = sum(c * c // 8 + c // 16 + c for c in (u.bn3.num_features for u in units))
    assert extra == 2_530_992
    assert count_params(se) - count_params(plain) == extra == 28_088_024 - 25_557_032


def test_squeeze_excite_matches_its_definition():
    torch.manual_seed(0)
    se = SqueezeExcite(32, reduction=4)
    x = torch.randn(2, 32, 5, 7)
    squeezed = x.mean(dim=(2, 3))
    hidden = torch.relu(squeezed @ se.fc_reduce.weight.T + se.fc_reduce.bias)
    gate = torch.sigmoid(hidden @ se.fc_expand.weight.T + se.fc_expand.bias)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])
    assert se.fc_reduce.out_features == 8
    with pytest.raises(ValueError, match="reduction"):
        SqueezeExcite(32, reduction=64)
    with pytest.raises(ValueError, match=r"Tensor\[N, 32, H, W\]"):
        se(torch.randn(2, 16, 5, 7))


# ---- Xception -------------------------------------------------------------------------------


def test_xception_has_36_convs_and_keras_counts():
    model = structure("xception")
    separable = [m for m in model.modules() if isinstance(m, SeparableConv2D)]
    # Chollet: 36 conv layers form the base (2 regular + 34 separable), plus 4 1×1 shortcuts.
    assert len(separable) == 34
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    moving = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert (trainable, moving, trainable + moving) == (22_855_952, 54_528, 22_910_480)


def test_xception_feature_sizes_as_in_keras():
    # keras.applications.Xception accepts inputs down to 71×71, where the exit flow is 3×3.
    model = structure("xception")
    outputs = model.eval().forward_stages(torch.zeros(1, 3, 299, 299, device="meta"))
    assert tuple(outputs[-1].shape[1:]) == (2048, 10, 10)  # Keras' 10×10×2048 at 299×299
    outputs = model.eval().forward_stages(torch.zeros(1, 3, 71, 71, device="meta"))
    assert [tuple(o.shape[1:]) for o in outputs] == [
        (64, 33, 33), (128, 17, 17), (256, 9, 9), (728, 5, 5), (2048, 3, 3)
    ]  # fmt: skip
