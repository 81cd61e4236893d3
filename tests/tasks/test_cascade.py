"""The int8 cascade: int8 first, float where the class could change. Its predictions are the float
model's on the real Fashion-MNIST test images, where int8 alone differs; the cached copy is the
one that was built."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit import create_model
from cnnkit.cli.predict import fashion_asset
from cnnkit.io.weights import load_state_dict_file, load_strict
from cnnkit.tasks.classify import cascade as cascade_module
from cnnkit.tasks.classify.quantize import quantize_int8
from cnnkit.tasks.classify.task import ClassifyTrainer

pytestmark = pytest.mark.skipif(
    not torch.backends.quantized.supported_engines or torch.backends.quantized.supported_engines == ["none"],
    reason="this PyTorch build has no quantized CPU engine",
)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Every test starts with an empty cache of its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "cnnkit" / "int8"


@pytest.fixture(scope="module")
def course_model() -> nn.Module:
    """The shipped trained course CNN (91.05 % on the test set)."""
    model = create_model("hongong_cnn")
    load_strict(model, load_state_dict_file(fashion_asset()))
    return model.eval()


def test_the_cascade_keeps_the_float_predictions_on_real_test_images(fashion, course_model):
    train, test = fashion
    test = test.subset(slice(0, 3000))
    trainer = ClassifyTrainer(course_model, device="cpu", optimizer=None, channels_last=True)
    float_logits = trainer.logits(test)
    cascade = trainer.use_int8_cascade(train.take(256, seed=0))
    logits = trainer.logits(test)
    assert torch.equal(logits.argmax(1), float_logits.argmax(1))
    # The int8 copy alone differs on about 1 % of these images: the second look is what fixes them.
    int8_alone = quantize_int8(course_model, trainer.prepare(train.take(256, seed=0).images))
    with torch.inference_mode():
        int8_pred = int8_alone(test.images.float().div(255)).argmax(1)
    assert int((int8_pred != float_logits.argmax(1)).sum()) >= 5
    # ... and it scores most images alone: about 5 % go to the float model (docs/performance.md).
    done = cascade.summary()
    assert done["images"] == 3000 and 0.01 * 3000 < done["rescored"] < 0.15 * 3000, done
    assert done["source"] == "built" and done["bound_steps"] >= cascade_module.MIN_BOUND_STEPS
    # The images scored again carry the float pass's logits bit for bit (each one computed in a
    # batch of the size the float pass gave it); the others the int8 ones (close).
    same = (logits == float_logits).all(1)
    assert int(same.sum()) == done["rescored"]
    assert (logits - float_logits).abs().mean() < 0.1 * float_logits.abs().mean()


def test_close_logits_flip_tta_and_normalisation(fashion, with_bn_statistics):
    """A BatchNorm CNN with trained-looking statistics but random weights: its logits lie close
    together, so many images have a small int8 gap (a harder case than the trained course CNN)."""
    train, test = fashion
    test = test.subset(slice(0, 1500))
    torch.manual_seed(0)
    model = create_model("fashion_bn_cnn", widths=[16, 32], hidden=64, pool_first=True)
    model = with_bn_statistics(model)
    trainer = ClassifyTrainer(model, device="cpu", optimizer=None, normalize=([0.286], [0.353]), tta=True)
    float_logits = trainer.logits(test)
    cascade = trainer.use_int8_cascade(train.take(256, seed=0))
    logits = trainer.logits(test)
    assert torch.equal(logits.argmax(1), float_logits.argmax(1))
    assert cascade.rescored > 0


def test_the_cached_copy_is_the_built_one_and_follows_the_weights(fashion, course_model, own_cache):
    train, test = fashion
    test = test.subset(slice(0, 500))
    calibration = train.take(256, seed=0)
    first = ClassifyTrainer(course_model, device="cpu", optimizer=None)
    built = first.use_int8_cascade(calibration)
    assert built.source == "built" and len(list(own_cache.glob("*.pt"))) == 1
    second = ClassifyTrainer(course_model, device="cpu", optimizer=None)
    loaded = second.use_int8_cascade(calibration)
    assert loaded.source == "cache" and (loaded.step, loaded.bound) == (built.step, built.bound)
    assert torch.equal(first.logits(test), second.logits(test))
    # Other weights: another copy, calibrated for them.
    changed = create_model("hongong_cnn")
    load_strict(changed, load_state_dict_file(fashion_asset()))
    with torch.no_grad():
        changed.head[-1].bias[0] += 0.5
    other = ClassifyTrainer(changed.eval(), device="cpu", optimizer=None).use_int8_cascade(calibration)
    assert other.source == "built" and len(list(own_cache.glob("*.pt"))) == 2
    # No cache: built each time, nothing written.
    ClassifyTrainer(course_model, device="cpu", optimizer=None).use_int8_cascade(calibration, cache=False)
    assert len(list(own_cache.glob("*.pt"))) == 2


def test_a_damaged_cache_file_is_rebuilt(fashion, course_model, own_cache):
    train, test = fashion
    calibration = train.take(256, seed=0)
    ClassifyTrainer(course_model, device="cpu", optimizer=None).use_int8_cascade(calibration)
    (path,) = own_cache.glob("*.pt")
    path.write_bytes(b"not a checkpoint")
    trainer = ClassifyTrainer(course_model, device="cpu", optimizer=None)
    again = trainer.use_int8_cascade(calibration)
    assert again.source == "built" and path.stat().st_size > 1000
    images = test.subset(slice(0, 300))
    float_pred = ClassifyTrainer(course_model, device="cpu", optimizer=None).logits(images).argmax(1)
    assert torch.equal(trainer.logits(images).argmax(1), float_pred)


def test_a_model_without_an_int8_form_says_which_layer(fashion):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval()
    trainer = ClassifyTrainer(model, device="cpu", optimizer=None)
    with pytest.raises(ValueError, match="int8 inference cannot run layer '0' \\(Conv2d\\)"):
        trainer.use_int8_cascade(fashion[0].take(64, seed=0))
    assert trainer.cascade is None


def test_cascade_pays_counts_a_cached_copy(fashion, course_model):
    calibration = ClassifyTrainer(course_model, device="cpu", optimizer=None).prepare(
        fashion[0].take(256, seed=0).images
    )
    built, cached = cascade_module.MIN_IMAGES_BUILT, cascade_module.MIN_IMAGES_CACHED
    assert not cascade_module.cascade_pays(cached, course_model, calibration, "fp32")
    assert cascade_module.cascade_pays(built, course_model, calibration, "fp32")
    ClassifyTrainer(course_model, device="cpu", optimizer=None).use_int8_cascade(fashion[0].take(256, seed=0))
    assert cascade_module.cascade_pays(cached, course_model, calibration, "fp32")
    assert not cascade_module.cascade_pays(cached - 1, course_model, calibration, "fp32")
    assert not cascade_module.cascade_pays(cached, course_model, calibration, "bf16")  # another key


def test_without_a_quantized_engine_evaluate_stays_float(fashion, course_model, monkeypatch):
    """A PyTorch without quantized kernels: the default scores in float, --cascade says why."""
    from types import SimpleNamespace

    from cnnkit.errors import UsageError
    from cnnkit.runs.evaluate import default_cascade

    no_kernels = SimpleNamespace(supported_engines=["none"], engine="none")
    monkeypatch.setattr(torch.backends, "quantized", no_kernels)
    trainer = ClassifyTrainer(course_model, device="cpu", optimizer=None)
    assert default_cascade(trainer, fashion[0], 10_000) is None and trainer.cascade is None
    with pytest.raises(UsageError, match="--cascade: this PyTorch build has no quantized CPU engine"):
        default_cascade(trainer, fashion[0], 10_000, mode=True)


def test_training_after_the_cascade_ends_it(fashion):
    """An int8 copy of older weights would score with them: after a step the task drops it."""
    train, test = fashion
    torch.manual_seed(0)
    trainer = ClassifyTrainer(create_model("hongong_cnn"), device="cpu")
    trainer.fit(train.subset(slice(0, 512)), epochs=1, batch_size=64, verbose=0)
    cascade = trainer.use_int8_cascade(train)  # the whole set: a sample of 256 calibrates
    assert cascade.fits(trainer.model)
    images = test.subset(slice(0, 300))
    trainer.logits(images)
    assert cascade.images == 300
    trainer.fit(train.subset(slice(512, 1024)), epochs=2, batch_size=64, verbose=0)  # one more
    assert not cascade.fits(trainer.model)
    logits = trainer.logits(images)
    assert trainer.cascade is None and cascade.images == 300
    plain = ClassifyTrainer(trainer.model, device="cpu", optimizer=None)
    assert torch.equal(logits, plain.logits(images))


def test_evaluate_cascade_names_the_layer_and_its_own_flag(fashion):
    from cnnkit.errors import UsageError
    from cnnkit.runs.evaluate import default_cascade

    layers = [nn.ZeroPad2d(2), nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 10)]
    model = nn.Sequential(*layers).eval()
    trainer = ClassifyTrainer(model, device="cpu", optimizer=None)
    assert default_cascade(trainer, fashion[0], 10_000) is None  # the default: float, silently
    with pytest.raises(UsageError, match=r"layer '0' \(ZeroPad2d\).*\(leave out --cascade\)$"):
        default_cascade(trainer, fashion[0], 10_000, mode=True)
