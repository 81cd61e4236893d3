"""The compiled 2×2 max-pool kernels against PyTorch's own pooling, bit for bit.

The maps are real: Fashion-MNIST images through the shipped course model's first convolution.
Their black backgrounds give whole regions of equal values (the convolution's bias), the case
where a pooling window has several maxima and only the first may receive the gradient.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from cnnkit import create_model
from cnnkit.layers import MaxPool2D
from cnnkit.layers import _fused_pool as fp
from cnnkit.layers._fused_pool import fused_max_pool_2x2, fused_pooling
from cnnkit.tasks.classify.task import ClassifyTrainer


@pytest.fixture(scope="module")
def maps(fashion_small) -> torch.Tensor:
    """Tensor[40, 32, 28, 28]: conv1 pre-activations of 40 real test images (FP32)."""
    from cnnkit.cli.predict import fashion_asset
    from cnnkit.io.weights import load_state_dict_file, load_strict

    model = create_model("hongong_cnn")
    load_strict(model, load_state_dict_file(fashion_asset()), "the shipped course model")
    x = fashion_small[1].images[:40].float().div(255)
    with torch.no_grad():
        return model.features.conv1.forward_pre_activation(x)


def _reference(x: torch.Tensor, relu: bool, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    y = F.max_pool2d(x, 2)
    if relu:
        y = torch.relu(y)
    y.backward(grad)
    return y.detach(), x.grad


def _fused(x: torch.Tensor, relu: bool, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    with fused_pooling():
        y = fused_max_pool_2x2(x, relu=relu)
    assert y is not None, "the compiled kernels did not run"
    y.backward(grad)
    return y.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("relu", [True, False])
def test_values_and_gradients_equal_pytorch_pooling_bit_for_bit(maps, dtype, channels_last, relu):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = maps.to(dtype).contiguous(memory_format=fmt)
    # Ties are there to test: many windows hold the same value more than once.
    windows = x.float().unfold(2, 2, 2).unfold(3, 2, 2).reshape(*x.shape[:2], 14, 14, 4)
    tied = (windows == windows.amax(-1, keepdim=True)).sum(-1) > 1
    assert tied.float().mean() > 0.1
    grad = torch.randn(x.shape[0], x.shape[1], 14, 14, generator=torch.Generator().manual_seed(0)).to(dtype)
    ref_y, ref_g = _reference(x, relu, grad)
    y, g = _fused(x, relu, grad)
    assert torch.equal(y, ref_y)
    assert torch.equal(g, ref_g)
    assert g.dtype == x.dtype and g.shape == x.shape


def test_every_batch_size_gives_the_same_results(maps):
    x = maps.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    for n in (40, 7, 2):
        part = x[:n]
        grad = torch.ones(n, 32, 14, 14, dtype=torch.bfloat16)
        ref_y, ref_g = _reference(part, True, grad)
        y, g = _fused(part, True, grad)
        assert torch.equal(y, ref_y) and torch.equal(g, ref_g), n


def test_values_only_in_inference_and_nan_propagates(maps):
    x = maps[:4].clone()
    x[0, 0, 0, 0] = float("nan")
    with torch.inference_mode(), fused_pooling():
        y = fused_max_pool_2x2(x, relu=True)
    assert y is not None
    ref = torch.relu(F.max_pool2d(x, 2))
    assert torch.isnan(y[0, 0, 0, 0]) and torch.isnan(ref[0, 0, 0, 0])
    assert torch.equal(torch.nan_to_num(y), torch.nan_to_num(ref))


def test_inapplicable_inputs_fall_back_to_pytorch(maps):
    x = maps[:2]
    assert fused_max_pool_2x2(x) is None  # outside fused_pooling
    with fused_pooling():
        assert fused_max_pool_2x2(x[..., :27, :27]) is None  # odd sides: PyTorch drops a row
        assert fused_max_pool_2x2(x.double()) is None
        assert fused_max_pool_2x2(x[0]) is None
        assert fused_max_pool_2x2(x[:1]) is None  # one image
        # The layers pick PyTorch's pooling for them and still give its results.
        odd = x[..., :27, :27]
        assert torch.equal(MaxPool2D(2)(odd), F.max_pool2d(odd, 2))
        padded = F.pad(odd, (0, 1, 0, 1), value=float("-inf"))
        assert torch.equal(MaxPool2D(2, padding="same")(odd), F.max_pool2d(padded, 2))
    with fused_pooling(False):
        assert fused_max_pool_2x2(x) is None


def test_environment_switch_turns_the_kernels_off(maps, monkeypatch):
    monkeypatch.setenv("CNNKIT_FUSED_POOL", "0")
    with fused_pooling():
        assert fused_max_pool_2x2(maps[:2]) is None
    monkeypatch.setenv("CNNKIT_FUSED_POOL", "1")
    with torch.no_grad(), fused_pooling():
        assert torch.equal(fused_max_pool_2x2(maps[:2]), F.max_pool2d(maps[:2], 2))


def test_a_failing_compiler_warns_once_and_pytorch_pooling_takes_over(maps, monkeypatch):
    def broken(name, fn, key):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(fp, "_compiled", broken)
    monkeypatch.setitem(fp._state, "broken", None)
    monkeypatch.setitem(fp._state, "seen", {})
    x = maps[:3].clone().requires_grad_()
    with fused_pooling(), pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
        y = MaxPool2D(2).forward_relu(x)
    y.sum().backward()
    ref_y, ref_g = _reference(maps[:3], True, torch.ones_like(y))
    assert torch.equal(y.detach(), ref_y) and torch.equal(x.grad, ref_g)
    with fused_pooling(), warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert fused_max_pool_2x2(maps[:3]) is None


def test_too_many_shapes_fall_back_instead_of_compiling(maps, monkeypatch):
    monkeypatch.setitem(fp._state, "seen", {"pool_values": {("other", i) for i in range(fp.MAX_SHAPES)}})
    with torch.no_grad(), fused_pooling():
        assert fused_max_pool_2x2(maps[:2]) is None


def test_trainer_fused_pool_trains_bit_identically(fashion_small):
    train, test = fashion_small
    base = create_model("hongong_cnn")
    runs = {}
    for fused in (False, True):
        torch.manual_seed(0)  # the same dropout masks
        trainer = ClassifyTrainer(
            copy.deepcopy(base), amp="bf16", channels_last=True, fused_pool=fused, optimizer="adam", lr=3e-3
        )
        trainer.fit(train.subset(slice(0, 600)), test.subset(slice(0, 300)), epochs=2, batch_size=128)
        logits = trainer.logits(test.subset(slice(0, 300)))
        runs[fused] = (trainer.history.epochs, trainer.model.state_dict(), logits)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [e[key] for e in runs[True][0]] == [e[key] for e in runs[False][0]]
    for name, tensor in runs[False][1].items():
        assert torch.equal(runs[True][1][name], tensor), name
    assert torch.equal(runs[True][2], runs[False][2])
    # The kernels ran for the second stage too (a shape only this test pools), and compiled.
    second_stage = ((64, 14, 14), torch.bfloat16, True, True)
    assert second_stage in fp._state["seen"]["pool_with_code"]
    assert second_stage in fp._state["seen"]["pool_grad"]
    assert fp.fused_pool_compile_seconds() > 0


def test_auto_turns_the_kernels_on_for_long_fits_only(fashion_small, monkeypatch):
    from cnnkit.engine import trainer as trainer_module
    from cnnkit.tasks.classify.presets import fast_trainer_options, trainer_extras

    assert fast_trainer_options("hongong_cnn")["fused_pool"] == "auto"
    assert "fused_pool" not in trainer_extras("course", 1e-3)
    train = fashion_small[0].subset(slice(0, 64))
    calls = []
    real = fp.fused_max_pool_2x2

    def counting(x, relu=False):
        calls.append(fp._ACTIVE.get())
        return real(x, relu)

    monkeypatch.setattr("cnnkit.layers.pooling.fused_max_pool_2x2", counting)
    short = ClassifyTrainer(create_model("hongong_cnn"), fused_pool="auto")
    short.fit(train, epochs=2, batch_size=32)  # 128 images: not worth compiling
    assert calls and not any(calls)
    calls.clear()
    monkeypatch.setattr(trainer_module, "FUSED_POOL_MIN_IMAGES", 128)
    long = ClassifyTrainer(create_model("hongong_cnn"), fused_pool="auto")
    long.fit(train, epochs=2, batch_size=32)
    long.logits(train)  # the choice holds for the inference after the fit
    assert calls and all(calls)
    with pytest.raises(ValueError, match="fused_pool must be True, False or 'auto'"):
        ClassifyTrainer(create_model("hongong_cnn"), fused_pool="yes")
