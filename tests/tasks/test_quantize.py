"""Int8 inference: the float chain is the model's own function, and the int8 model agrees with
float32 on the real Fashion-MNIST test images."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit import create_model
from cnnkit.cli.predict import fashion_asset
from cnnkit.io.weights import load_state_dict_file, load_strict
from cnnkit.layers import Conv2D, Dense, Flatten, MaxPool2D
from cnnkit.tasks.classify.quantize import Int8Classifier, float_chain, quantize_int8, quantized_engine
from cnnkit.tasks.classify.task import ClassifyTrainer

pytestmark = pytest.mark.skipif(
    not torch.backends.quantized.supported_engines or torch.backends.quantized.supported_engines == ["none"],
    reason="this PyTorch build has no quantized CPU engine",
)


@pytest.fixture(scope="module")
def course_model() -> nn.Module:
    """The shipped trained course CNN (91.05 % on the test set)."""
    model = create_model("hongong_cnn")
    load_strict(model, load_state_dict_file(fashion_asset()))
    return model.eval()


def _images(data, n: int) -> torch.Tensor:
    return data.images[:n].float().div(255)


@pytest.mark.parametrize(
    ("name", "kwargs", "negative_scale"),
    [
        ("hongong_cnn", {}, False),
        ("fashion_bn_cnn", {"widths": [16, 64], "hidden": 128, "pool_first": True}, False),
        ("fashion_bn_cnn", {"widths": [16, 64], "hidden": 128, "pool_first": True}, True),
        ("fashion_bn_cnn", {"widths": [8, 16], "depth": 2}, False),
    ],
)
def test_float_chain_computes_the_model(fashion_small, with_bn_statistics, name, kwargs, negative_scale):
    torch.manual_seed(0)
    model = with_bn_statistics(create_model(name, **kwargs), negative_scale)
    x = _images(fashion_small[1], 128)
    chain = float_chain(model)
    with torch.no_grad():
        expected, got = model(x), chain(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    kinds = [type(m) for m in chain]
    assert nn.BatchNorm2d in kinds if negative_scale else nn.BatchNorm2d not in kinds  # folded when exact
    assert nn.Dropout not in kinds


def test_int8_agrees_with_float32_on_real_test_images(fashion, course_model):
    train, test = fashion
    test = test.subset(slice(0, 2000))
    net = quantize_int8(course_model, _images(train, 1000))
    assert isinstance(net, Int8Classifier) and net.engine == quantized_engine()
    assert any(type(m).__module__.startswith("torch.ao.nn.intrinsic.quantized") for m in net.net)
    float_logits = ClassifyTrainer(course_model, device="cpu", optimizer=None).logits(test)
    int8_logits = ClassifyTrainer(net, device="cpu", optimizer=None).logits(test)
    assert int8_logits.dtype == torch.float32 and int8_logits.shape == float_logits.shape
    agree = float((int8_logits.argmax(1) == float_logits.argmax(1)).float().mean())
    acc_float = float((float_logits.argmax(1) == test.labels).float().mean())
    acc_int8 = float((int8_logits.argmax(1) == test.labels).float().mean())
    assert agree >= 0.98, agree  # 99.0 % on all 10,000 test images (docs/performance.md)
    assert abs(acc_int8 - acc_float) <= 0.01, (acc_int8, acc_float)
    # Not the float model in disguise: the logits carry int8 rounding.
    assert not torch.allclose(int8_logits, float_logits, atol=1e-4)
    relative = (int8_logits - float_logits).abs().mean() / float_logits.abs().mean()
    assert relative < 0.03, relative


def test_quantizing_leaves_the_model_alone(fashion_small, course_model):
    before = {k: v.clone() for k, v in course_model.state_dict().items()}
    quantize_int8(course_model, _images(fashion_small[0], 64))
    after = course_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert course_model(torch.zeros(1, 1, 28, 28)).dtype == torch.float32


def test_int8_with_flip_tta_and_normalisation(fashion_small, course_model):
    train, test = fashion_small
    mean, std = [0.286], [0.353]
    prep = ClassifyTrainer(course_model, optimizer=None, device="cpu", normalize=(mean, std))
    calib = prep.prepare(train.images[:256])
    # The course model was trained without normalisation; only the plumbing is checked here.
    net = quantize_int8(course_model, calib)
    trainer = ClassifyTrainer(net, device="cpu", optimizer=None, normalize=(mean, std), tta=True)
    images = test.subset(slice(0, 64))
    logits = trainer.logits(images)
    assert logits.shape == (64, 10) and torch.isfinite(logits).all()
    # Values, by hand: the int8 net on the normalised image and on its mirror, averaged.
    x = (images.images.float() / 255 - mean[0]) / std[0]
    with torch.no_grad():
        by_hand = (net(x) + net(x.flip(-1))) / 2
    assert torch.allclose(logits, by_hand, atol=1e-5)
    # And the float model with the same flip averaging decides the same on nearly every image.
    with torch.no_grad():
        float_tta = (course_model(x) + course_model(x.flip(-1))) / 2
    assert float((logits.argmax(1) == float_tta.argmax(1)).float().mean()) >= 0.95


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (lambda: create_model("resnet18", num_classes=10, in_chans=1), "'model' (ResNet)"),
        (
            lambda: nn.Sequential(
                Conv2D(4, 3, padding="same", activation="tanh", in_channels=1),
                Flatten(),
                Dense(10, in_features=4 * 28 * 28),
            ),
            "activation Tanh",
        ),
        (
            lambda: nn.Sequential(Conv2D(4, 2, padding="same", in_channels=1), Flatten()),
            "uneven",
        ),
        (lambda: nn.Sequential(MaxPool2D(2, padding="same"), Flatten()), "'valid'"),
        (lambda: nn.Sequential(Conv2D(4, 3), Flatten()), "not built yet"),
    ],
)
def test_unsupported_layers_are_named(model, message):
    with pytest.raises(ValueError, match="int8 inference cannot run layer") as info:
        quantize_int8(model(), torch.rand(8, 1, 28, 28))
    assert message in str(info.value) and "leave out --int8" in str(info.value)


def test_bad_calibration_and_engine(course_model):
    with pytest.raises(ValueError, match=r"Tensor\[N, C, H, W\], got shape \(28, 28\)"):
        quantize_int8(course_model, torch.rand(28, 28))
    with pytest.raises(ValueError, match="got shape \\(0, 1, 28, 28\\)"):
        quantize_int8(course_model, torch.rand(0, 1, 28, 28))
    with pytest.raises(ValueError, match="must be float .* torch.uint8"):
        quantize_int8(course_model, torch.zeros(4, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="quantized engine 'tpu' is not in this PyTorch build"):
        quantize_int8(course_model, torch.rand(4, 1, 28, 28), engine="tpu")


def test_a_pytorch_without_quantization_gets_one_clear_error(course_model, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)  # as if it had been removed
    with pytest.raises(RuntimeError, match="has no torch.ao.quantization.*leave out --int8"):
        quantize_int8(course_model, torch.rand(4, 1, 28, 28))


def test_inference_only_trainer_refuses_to_train(fashion_small, course_model):
    trainer = ClassifyTrainer(course_model, device="cpu", optimizer=None)
    with pytest.raises(ValueError, match="optimizer=None .* cannot fit"):
        trainer.fit(fashion_small[0].subset(slice(0, 32)), epochs=1)
    with pytest.raises(ValueError, match="cannot save a training state"):
        trainer.state()
