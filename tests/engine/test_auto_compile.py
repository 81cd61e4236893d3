"""compile='auto': compiled inference only once the work amortizes it, with bf16 eager's
predictions; the persistent compile cache; the fallback when the compiler fails.

The shipped course model (``cnnkit predict fashion``) on real Fashion-MNIST test images. One
compile in this process (shared by the module) and one in a second process on the warm cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from cnnkit import create_model
from cnnkit.cli.predict import fashion_asset
from cnnkit.engine import compile_cache
from cnnkit.engine.compile_cache import compile_pays, expected_compile_seconds, record_compile_seconds
from cnnkit.io.weights import load_state_dict_file, load_strict
from cnnkit.tasks.classify.task import ClassifyTrainer

BATCH = 128
IMAGES = 600  # batches of 128: two eager ones decide, then the compiled graph (last one padded)


def shipped_trainer(compile):
    model = create_model("hongong_cnn")
    load_strict(model, load_state_dict_file(fashion_asset()), "the shipped course model")
    return ClassifyTrainer(
        model, device="cpu", amp="bf16", channels_last=True, optimizer=None, compile=compile
    )


@pytest.fixture(scope="module")
def images(fashion):
    return fashion[1].images[:IMAGES]


@pytest.fixture(scope="module")
def eager_bf16(images):
    return shipped_trainer(False).logits(images, BATCH).argmax(1)


@pytest.fixture(scope="module")
def auto_compiled(images):
    """An 'auto' Trainer told to expect a long job: it compiles after two eager batches."""
    trainer = shipped_trainer("auto")
    trainer.forward.expected_images = 10**9
    first = trainer.logits(images, BATCH).argmax(1)
    return trainer, first


def test_auto_compiles_a_long_job_with_bf16_eagers_predictions(images, eager_bf16, auto_compiled, fashion):
    trainer, first = auto_compiled
    assert trainer.forward.compile and trainer.compile_seconds > 0
    assert torch.equal(first, eager_bf16)  # eager batches, then compiled ones
    before = trainer.compile_seconds
    again = trainer.logits(images, BATCH).argmax(1)  # every batch compiled, no new compile
    assert trainer.compile_seconds == before
    assert torch.equal(again, eager_bf16)
    fp32 = ClassifyTrainer(trainer.model, device="cpu", optimizer=None).logits(images, BATCH).argmax(1)
    assert (again == fp32).float().mean() >= 0.995
    # the labels too: the shipped model's accuracy on these images (91 % on the full test set)
    assert (again == fashion[1].labels[:IMAGES]).float().mean() >= 0.88


def test_a_second_process_on_the_warm_cache_gives_the_same_predictions(images, auto_compiled, tmp_path):
    trainer, _ = auto_compiled
    expected = trainer.logits(images, BATCH).argmax(1)
    torch.save(images.clone(), tmp_path / "images.pt")
    code = f"""
import json, torch
from tests.engine.test_auto_compile import shipped_trainer
trainer = shipped_trainer(True)
pred = trainer.logits(torch.load({str(tmp_path / "images.pt")!r}), {BATCH}).argmax(1)
print(json.dumps({{"pred": pred.tolist(), "seconds": trainer.compile_seconds}}))
"""
    root = Path(__file__).resolve().parents[2]
    # The same inductor cache folder as this process's compile (cnnkit's, or the one set before).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["seconds"] > 0
    assert out["pred"] == expected.tolist()


def test_a_handful_of_images_stays_eager(images, eager_bf16):
    trainer = shipped_trainer("auto")
    pred = trainer.logits(images[:8], BATCH).argmax(1)
    assert not trainer.forward.compile and trainer.compile_seconds == 0
    assert torch.equal(pred, eager_bf16[:8])


def test_the_amortization_rule():
    # The course CNN: ~20 µs per image eager on 2 cores, 15 % saved, a warm compile of ~2 s.
    assert not compile_pays(8, 20e-6, 2.0)
    assert not compile_pays(10_000, 20e-6, 2.0)  # one test-set evaluation: saves 0.03 s
    assert compile_pays(10_000_000, 20e-6, 2.0)  # a long job: saves 30 s
    # A ResNet-50 at 224 px: ~50 ms per image; the full 10,000-image test set pays a cold compile.
    assert not compile_pays(8, 50e-3, 10.0)
    assert compile_pays(10_000, 50e-3, 10.0)


def test_compile_seconds_are_remembered_per_model(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert expected_compile_seconds("m|1") == compile_cache.COLD_COMPILE_SECONDS  # nothing measured
    record_compile_seconds("m|1", 1.25)
    record_compile_seconds("m|2", 4.0)
    record_compile_seconds("m|1", 9.5)  # a slower compile (a busy moment) does not replace it
    assert expected_compile_seconds("m|1") == 1.25 and expected_compile_seconds("m|2") == 4.0
    assert json.loads((tmp_path / "cnnkit" / "compile_seconds.json").read_text())["m|1"] == 1.25


def test_the_cache_folder_is_cnnkits_unless_the_user_set_one(tmp_path, monkeypatch):
    monkeypatch.setattr(compile_cache, "_set_by_cnnkit", [])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(compile_cache.INDUCTOR_ENV, "/somewhere/of/the/users")
    assert compile_cache.use_persistent_cache() is None
    assert os.environ[compile_cache.INDUCTOR_ENV] == "/somewhere/of/the/users"
    monkeypatch.delenv(compile_cache.INDUCTOR_ENV)
    folder = tmp_path / "cnnkit" / "inductor"
    assert compile_cache.use_persistent_cache() == str(folder) == os.environ[compile_cache.INDUCTOR_ENV]
    assert folder.is_dir()


def test_a_broken_compiler_falls_back_to_eager_with_one_warning(images, eager_bf16, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    trainer = shipped_trainer("auto")
    trainer.forward.expected_images = 10**9
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred = trainer.logits(images, BATCH).argmax(1)
        again = trainer.logits(images, BATCH).argmax(1)
    said = [w for w in caught if "could not compile" in str(w.message)]
    assert len(said) == 1 and "no C++ compiler" in str(said[0].message)
    assert not trainer.forward.compile
    assert torch.equal(pred, eager_bf16) and torch.equal(again, eager_bf16)


def test_compile_off_and_other_devices_stay_eager(images):
    trainer = shipped_trainer(False)
    trainer.forward.expected_images = 10**9
    trainer.logits(images, BATCH)
    assert not trainer.forward.compile and trainer.compile_seconds == 0
    with pytest.raises(ValueError, match="compile must be"):
        shipped_trainer("sometimes")
