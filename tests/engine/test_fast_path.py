"""The fast path stays correct: each speed trick checked on small real Fashion-MNIST subsets.

No timing is asserted here (timings live in bench/); these only check that the results agree.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit import create_model
from cnnkit.engine import seed_everything
from cnnkit.engine.device import pick_device
from cnnkit.engine.perf import PerfSettings, cpu_has_bf16, pick_num_threads, pick_perf_settings, set_threads
from cnnkit.engine.schedules import one_cycle
from cnnkit.errors import UsageError
from cnnkit.layers import Conv2D
from cnnkit.tasks.classify.augment import (
    FlipTranslate,
    flip_tta,
    random_cutout,
    random_flip,
    random_translate,
    shift_tta,
)
from cnnkit.tasks.classify.presets import PRESETS, apply_preset, fast_trainer_options, trainer_extras
from cnnkit.tasks.classify.task import ClassifyTrainer


@pytest.fixture(scope="module", autouse=True)
def free_core_threads():
    """The fast path's thread choice (on a busy machine, extra threads only wait for cores)."""
    before = torch.get_num_threads()
    set_threads(pick_num_threads())
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def device():
    return pick_device()


@pytest.fixture(scope="module")
def trained(fashion_small, device):
    """hongong_cnn after one FP32 epoch on 2,000 real images, and the 500 test images."""
    train, test = fashion_small
    seed_everything(0)
    trainer = ClassifyTrainer(create_model("hongong_cnn"), device=device, seed=0)
    trainer.fit(train, epochs=1, batch_size=64)
    return trainer.model, test


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


# ------------------------------------------------------------------ augmentation
def test_flip_with_p_one_is_an_exact_mirror_and_p_zero_is_identity(fashion_small):
    x = fashion_small[0].images[:64].float()
    assert torch.equal(random_flip(x, p=1.0), x.flip(-1))
    assert torch.equal(random_flip(x, p=0.0), x)


def test_random_flip_rows_are_either_the_image_or_its_mirror(fashion_small):
    x = fashion_small[0].images[:256].float()
    torch.manual_seed(0)
    out = random_flip(x)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0 < int((mirrored & ~same).sum()) < 256  # some flipped, some not


def _shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference: move the content by (dy, dx), zeros coming in (explicit slicing)."""
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        ..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


@pytest.mark.parametrize("channels_last", [False, True])
def test_random_translate_is_a_whole_pixel_shift_with_zero_fill(fashion_small, channels_last):
    x = fashion_small[0].images[:48].float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(1)
    out = random_translate(x, max_shift=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    seen = set()
    for i in range(len(x)):
        match = [s for s in shifts if torch.equal(out[i], _shift(x[i], *s))]
        assert match, f"sample {i} is not a shifted copy of its input"
        seen.update(match)
    assert len(seen) > 5  # offsets really vary per sample


@pytest.mark.parametrize("channels_last", [False, True])
def test_random_cutout_blanks_one_clipped_square_per_image(fashion_small, channels_last):
    x = fashion_small[0].images[:64].float() + 1  # no zero pixel before the cutout
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    size = 8
    torch.manual_seed(3)
    out = random_cutout(x, size)
    assert out.shape == x.shape and out.is_contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )
    # Reference: the same draws (rows, then columns of the centres), squares cut out in NumPy loops.
    torch.manual_seed(3)
    cy, cx = torch.randint(0, 28, (64,)).numpy(), torch.randint(0, 28, (64,)).numpy()
    expected = x.numpy().copy()
    for i in range(64):
        for r in range(cy[i] - size // 2, cy[i] - size // 2 + size):
            for c in range(cx[i] - size // 2, cx[i] - size // 2 + size):
                if 0 <= r < 28 and 0 <= c < 28:
                    expected[i, :, r, c] = 0
    np.testing.assert_array_equal(out.numpy(), expected)
    blank = (out == 0).sum((1, 2, 3))
    assert blank.max() == size * size and blank.min() < size * size  # inside, and clipped at an edge
    assert torch.equal(out[out != 0], x[out != 0])  # nothing else changed
    assert random_cutout(x, 0) is x
    with pytest.raises(ValueError, match="cutout size"):
        random_cutout(x, -1)
    with pytest.raises(ValueError, match="cutout"):
        FlipTranslate(cutout=2.5)


def test_augmentation_keeps_shapes_and_labels_in_training(fashion_small, device):
    train, _ = fashion_small
    seen = []

    def spy(x: torch.Tensor) -> torch.Tensor:
        out = FlipTranslate(max_shift=2)(x)
        seen.append((tuple(x.shape), tuple(out.shape), x.dtype, out.dtype))
        return out

    labels_before = train.labels.clone()
    trainer = ClassifyTrainer(create_model("hongong_cnn"), device=device, augment=spy)
    trainer.fit(train.take(256, seed=0), epochs=1, batch_size=64)
    assert seen and all(a == b and da == db for a, b, da, db in seen)
    assert torch.equal(train.labels, labels_before)


def test_augmentation_rejects_bad_arguments():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="max_shift"):
        random_translate(x, max_shift=-1)
    with pytest.raises(ValueError, match="p must"):
        random_flip(x, p=1.5)
    with pytest.raises(ValueError, match="flip_p"):
        FlipTranslate(flip_p=2)


# ------------------------------------------------------------------ TTA
def test_flip_tta_equals_the_mean_of_the_two_views(trained, device):
    model, test = trained
    x = (test.images[:128].float() / 255).to(device)
    model.eval()
    with torch.inference_mode():
        expected = (model(x) + model(x.flip(-1))) / 2
        got = flip_tta(model, x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_trainer_tta_logits_are_the_two_view_mean(trained, device):
    model, test = trained
    plain = ClassifyTrainer(model, device=device).logits(test)
    mirrored = ClassifyTrainer(model, device=device).logits(test.images.flip(-1))
    tta = ClassifyTrainer(model, device=device, tta=True).logits(test)
    torch.testing.assert_close(tta, (plain + mirrored) / 2, rtol=1e-4, atol=1e-5)


def _shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    # The image moved by (dy, dx) pixels (dy > 0: down), zeros shifted in: NumPy's own padding.
    h, w = images.shape[-2:]
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return padded[:, :, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]


def test_shift_tta_is_the_mean_of_ten_views(trained, device):
    model, test = trained
    images = test.images[:64].numpy()
    # The ten views, made in NumPy: each image and its mirror, as they are and moved one pixel
    # down, up, right and left; the model runs on each view apart.
    views = [
        _shifted(im, dy, dx)
        for im in (images, images[..., ::-1])
        for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
    ]
    model.eval()
    with torch.inference_mode():
        expected = sum(model(torch.from_numpy(v / 255.0).float().to(device)) for v in views) / 10
        x = torch.from_numpy(images / 255.0).float().to(device)
        got = shift_tta(model, x)
        got_cl = shift_tta(model, x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_cl, expected, rtol=1e-4, atol=1e-5)


def test_shift_tta_scores_tests_and_flips_validation(trained, device):
    # "shift" takes the ten views for test scores; validation in training takes the two flip views.
    model, test = trained
    data = test.subset(slice(0, 96))
    flip = ClassifyTrainer(model, device=device, tta=True).logits(data)
    shift = ClassifyTrainer(model, device=device, tta="shift")
    x = (data.images.float() / 255).to(device)
    with torch.inference_mode():
        torch.testing.assert_close(shift.logits(data), shift_tta(model.eval(), x).cpu(), rtol=1e-4, atol=1e-5)
    val = shift.task.validate(shift, data)
    assert val["accuracy"] == pytest.approx(float((flip.argmax(1) == data.labels).float().mean()))
    assert not torch.allclose(shift.logits(data), flip, atol=1e-3)
    with pytest.raises(
        ValueError, match=r"tta must be True, False or one of \('flip', 'shift'\), got 'crop'"
    ):
        ClassifyTrainer(model, device=device, tta="crop")


# ------------------------------------------------------------------ memory format, batch size
def test_channels_last_gives_identical_predictions(trained, device):
    model, test = trained
    nchw = ClassifyTrainer(model, device=device).logits(test)
    nhwc = ClassifyTrainer(model, device=device, channels_last=True).logits(test)
    assert torch.equal(nchw.argmax(1), nhwc.argmax(1))
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-4)
    model.to(memory_format=torch.contiguous_format)


def test_inference_batch_size_does_not_change_predictions(trained, device):
    model, test = trained
    trainer = ClassifyTrainer(model, device=device)
    torch.testing.assert_close(trainer.logits(test, 256), trainer.logits(test, 1000), rtol=1e-4, atol=1e-4)
    assert torch.equal(trainer.logits(test, 256).argmax(1), trainer.logits(test, 1000).argmax(1))


# ------------------------------------------------------------------ bf16
def test_bf16_inference_matches_fp32_accuracy(trained, device):
    model, test = trained
    fp32 = ClassifyTrainer(model, device=device).logits(test)
    bf16 = ClassifyTrainer(model, device=device, amp="bf16").logits(test)
    assert abs(_accuracy(bf16, test.labels) - _accuracy(fp32, test.labels)) <= 0.01
    assert float((bf16.argmax(1) == fp32.argmax(1)).float().mean()) >= 0.98


def test_bf16_training_reaches_fp32_accuracy(fashion_small, device):
    train, test = fashion_small
    accuracy = {}
    for amp in (None, "bf16"):
        seed_everything(0)
        model = create_model("fashion_bn_cnn", widths=(16, 32), hidden=64)
        trainer = ClassifyTrainer(
            model,
            device=device,
            seed=0,
            amp=amp,
            channels_last=True,
            lr=2e-3,
        )
        trainer.fit(train, epochs=2, batch_size=64)
        accuracy[amp] = _accuracy(trainer.logits(test), test.labels)
    assert accuracy[None] > 0.7
    assert abs(accuracy["bf16"] - accuracy[None]) <= 0.03, accuracy


# ------------------------------------------------------------------ settings, schedule, preset
def test_perf_settings_per_device():
    cpu = pick_perf_settings(torch.device("cpu"), num_threads=1)
    assert cpu == PerfSettings(
        amp="bf16" if cpu_has_bf16() else None, channels_last=True, num_threads=1, inference_batch=256
    )
    other = pick_perf_settings(torch.device("meta"))
    assert other.amp is None and not other.channels_last


def test_busy_cores_reads_two_proc_stat_samples(tmp_path, monkeypatch):
    import cnnkit.engine.perf as perf

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: the aggregate line, cpu7 (outside the
    # mask), a blank line and other counters are ignored; cpu1 has the short field list of old kernels.
    first = (
        "cpu  9 9 9 9 9 9 9 9\ncpu0 100 0 0 100 0 0 0 0\ncpu1 50 0 0 50\ncpu7 1 1 1 1 1 1 1 1\n\nintr 5 6\n"
    )
    stat.write_text(first)
    monkeypatch.setattr(perf, "PROC_STAT", str(stat))
    monkeypatch.setattr(perf.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert perf._cpu_times({0, 1}) == {0: (100, 200), 1: (50, 100)}

    def tick(seconds):  # 100 ticks later: cpu0 busy 30 + steal 20 of them, cpu1 busy all 100
        stat.write_text("cpu0 130 0 0 150 0 0 0 20\ncpu1 150 0 0 50\n")

    monkeypatch.setattr(perf.time, "sleep", tick)
    assert perf.busy_cores() == pytest.approx(0.5 + 1.0)
    stat.write_text(first)
    assert perf.pick_num_threads() == 1  # 2 cores, 1.5 busy
    monkeypatch.setattr(perf, "PROC_STAT", str(tmp_path / "missing"))
    monkeypatch.setattr(perf.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert perf.busy_cores() is None and perf.pick_num_threads() == 2  # the load average instead


def test_busy_cores_sees_a_spinning_process():
    from cnnkit.engine.perf import busy_cores

    if not os.path.exists("/proc/stat"):  # not Linux: no sample, the load average is used
        assert busy_cores(0.01) is None
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cores(0.5) >= 0.7  # one core spun the whole sample
    finally:
        spinner.kill()
        spinner.wait()


def test_thread_choice_leaves_busy_cores_alone():
    assert pick_num_threads(load=0.0) >= 1
    assert pick_num_threads(load=100.0) == 1
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="num_threads"):
        set_threads(0)


def test_one_cycle_warms_up_to_max_lr_then_anneals():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0, momentum=0.9)
    sched = one_cycle(0.2, pct_start=0.25)(opt, 100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.02)
    assert max(lrs) == pytest.approx(0.2, rel=1e-3) and 20 <= lrs.index(max(lrs)) <= 30
    assert lrs[-1] < 0.001
    with pytest.raises(ValueError, match="pct_start"):
        one_cycle(0.1, pct_start=1.5)
    for tiny in (1, 2, 4):  # a few batches (--limit-train) must not break the schedule
        sched = one_cycle(0.2, pct_start=0.25)(opt, tiny)
        for _ in range(tiny):
            opt.step()
            sched.step()


def test_fast_preset_fills_unset_keys_and_resolves_speed_settings():
    config = apply_preset("fast", {"model": "hongong_cnn", "lr": 0.5}, explicit={"lr"})
    assert config["model"] == PRESETS["fast"]["model"] and config["lr"] == 0.5
    assert config["batch_size"] == PRESETS["fast"]["batch_size"] and config["preset"] == "fast"
    assert config["amp"] == pick_perf_settings(pick_device(), 1).amp
    assert config["model_kwargs"] == PRESETS["fast"]["model_kwargs"]
    own = apply_preset("fast", {"model": "hongong_cnn", "model_kwargs": {}}, explicit={"model"})
    assert own["model"] == "hongong_cnn" and own["model_kwargs"] == {}
    assert config["patience"] == config["epochs"] == PRESETS["fast"]["epochs"]
    longer = apply_preset("fast", {"epochs": 40}, explicit={"epochs"})
    assert longer["patience"] == 40  # a longer one-cycle run is not cut short by early stopping
    assert (
        apply_preset("fast", {"epochs": 40, "patience": 3}, explicit={"epochs", "patience"})["patience"] == 3
    )
    assert trainer_extras("course", 1e-3) == {}
    assert set(trainer_extras("fast", 0.1)) == {"augment", "scheduler", "tta", "fused_pool"}
    with pytest.raises(UsageError, match="unknown preset"):
        trainer_extras("fastest", 0.1)


def test_max_shift_sets_translation_for_either_preset(tmp_path, capsys, monkeypatch):
    import json

    import cnnkit.runs.session
    from cnnkit.cli.__main__ import main
    from cnnkit.runs.config import RunConfig

    def shift_and_flip(extras):
        return extras["augment"].max_shift, extras["augment"].flip_p

    assert shift_and_flip(trainer_extras("fast", 0.2)) == (0, 0.5)  # the preset's own: flips only
    assert shift_and_flip(trainer_extras("fast", 0.2, max_shift=2)) == (2, 0.5)
    assert shift_and_flip(trainer_extras("course", 1e-3, max_shift=1)) == (1, 0.0)
    assert trainer_extras("course", 1e-3, max_shift=0) == {}
    assert trainer_extras("course", 1e-3, cutout=6)["augment"].cutout == 6
    assert trainer_extras("fast", 0.2, cutout=4)["augment"].cutout == 4
    assert trainer_extras("fast", 0.2)["augment"].cutout == 0
    with pytest.raises(UsageError, match="cutout must be >= 0"):
        RunConfig(cutout=-2).validate()
    with pytest.raises(UsageError, match="max_shift must be >= 0"):
        RunConfig(max_shift=-1).validate()
    out = tmp_path / "run"
    argv = ["train", "--preset", "fast", "--max-shift", "1", "--cutout", "5", "--epochs", "1"]
    argv += ["--limit-train", "256"]
    argv += ["--val-fraction", "0.125"]  # 224 training images, 32 held out
    # An explicit OMP_NUM_THREADS wins over the fast preset's own thread choice.
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    monkeypatch.setattr(cnnkit.runs.session, "pick_num_threads", lambda: pytest.fail("threads were picked"))
    assert main([*argv, "--limit-test", "64", "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["run"]["max_shift"] == 1 and record["run"]["val_fraction"] == 0.125
    assert record["run"]["cutout"] == 5
    assert (record["data_sizes"]["train"], record["data_sizes"]["val"]) == (224, 32)
    capsys.readouterr()
    # A resumed run keeps its saved settings: the flags are refused, not silently dropped.
    assert main(["train", "--resume", str(out), "--max-shift", "2"]) == 2
    assert "--max-shift" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--cutout", "2"]) == 2
    assert "--cutout" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--val-fraction", "0.1"]) == 2
    assert "--val-fraction" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--no-whiten"]) == 2  # named as given
    assert "drop --no-whiten" in capsys.readouterr().err


def test_fast_options_drop_flip_tta_when_training_without_flips():
    assert fast_trainer_options("fashion_bn_cnn")["tta"] is True
    plain = fast_trainer_options("hongong_cnn", augment=False)
    assert plain["augment"] is None and plain["tta"] is False and plain["optimizer"] == "adam"


def test_pool_first_equals_pool_last_when_batchnorm_scales_are_positive():
    # Max-pooling commutes with a per-channel increasing map (BN with scale > 0, then ReLU), so
    # conv-pool-BN-ReLU must equal the usual conv-BN-ReLU-pool with the same weights.
    seed_everything(0)
    kw = {"widths": (4, 8), "hidden": 12}
    last, first = create_model("fashion_bn_cnn", **kw), create_model("fashion_bn_cnn", pool_first=True, **kw)
    state = {}
    for key, value in last.state_dict().items():
        for i in (1, 2):
            key = key.replace(f"features.stage{i}.1.", f"features.act{i}.0.")
        state[key] = value
    for name, value in state.items():
        if name.endswith(("running_mean", "bias")):
            state[name] = torch.randn_like(value) * 0.1
        elif name.endswith("running_var") or (".act" in name and name.endswith("weight")):
            state[name] = torch.rand_like(value) + 0.5
    first.load_state_dict(state)
    last.load_state_dict(
        {
            k: state[k.replace("stage1.1.", "act1.0.").replace("stage2.1.", "act2.0.")]
            for k in last.state_dict()
        }
    )
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(first.eval()(x), last.eval()(x), rtol=1e-5, atol=1e-5)
    assert [f.stride for f in first.feature_info] == [2, 4]
    assert [tuple(t.shape) for t in first.forward_stages(x)] == [(3, 4, 14, 14), (3, 8, 7, 7)]


def test_fashion_bn_cnn_takes_a_depth_per_stage():
    # widths (8, 16, 32), depth (1, 2, 1), by hand: 3x3 conv weights (no bias) + BN scale and shift
    # per conv, then the 32 -> 10 classifier: 72+16 + 1152+32 + 2304+32 + 4608+64 + 330 = 8,610.
    model = create_model("fashion_bn_cnn", widths=(8, 16, 32), depth=(1, 2, 1))
    assert sum(p.numel() for p in model.parameters()) == 8_610
    convs = [name for name, m in model.named_modules() if isinstance(m, Conv2D)]
    assert [n.split(".")[1] for n in convs] == ["stage1", "stage2", "stage2", "stage3"]
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    same = create_model("fashion_bn_cnn", widths=(8, 16), depth=(2, 2))
    assert [tuple(p.shape) for p in same.parameters()] == [
        tuple(p.shape) for p in create_model("fashion_bn_cnn", widths=(8, 16), depth=2).parameters()
    ]
    with pytest.raises(ValueError, match=r"one such int per stage \(3\)"):
        create_model("fashion_bn_cnn", widths=(8, 16, 32), depth=(1, 2))


def test_cli_model_option_reaches_the_classifier(tmp_path, capsys, monkeypatch):
    import json

    from cnnkit.cli.__main__ import main
    from cnnkit.engine import trainer as trainer_module
    from cnnkit.layers import _fused_pool

    monkeypatch.setitem(_fused_pool._state, "seen", {})  # first calls timed as compiling again
    monkeypatch.setattr(trainer_module, "FUSED_POOL_MIN_IMAGES", 1)  # 'auto' on for this short fit

    out = tmp_path / "run"
    argv = [
        "train",
        "--preset",
        "fast",
        "--model",
        "fashion_bn_cnn",
        "--model-option",
        "widths=[8,16]",
        "--model-option",
        "pool_first=true",
        "--epochs",
        "1",
        "--limit-train",
        "256",
        "--limit-test",
        "64",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    run = json.loads((out / "config.json").read_text())["run"]
    # --model names the model: the preset's own architecture options are left out.
    assert run["model_kwargs"] == {"widths": [8, 16], "pool_first": True}
    # `cnnkit evaluate` scores the run as its training did (flip TTA, the run's precision).
    metrics = json.loads((out / "metrics.json").read_text())
    # The fast preset's compiled max-pool kernels: their compiling is reported apart.
    assert 0 < metrics["compile_seconds"] < metrics["train_seconds"]
    assert "compiling (the max-pool kernels)" in capsys.readouterr().out
    # The evaluation below runs PyTorch's pooling: the same score as the run's own (fused) one.
    assert main(["evaluate", str(out), "--limit-test", "64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tta"] is True and report["amp"] == run["amp"]
    assert report["accuracy"] == metrics["test_accuracy"]
    assert report["loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)


@pytest.mark.parametrize("amp", [False, True])
def test_pool_before_relu_gives_identical_values_and_gradients(amp):
    # ReLU is monotonic, so max-pool(ReLU(conv)) == ReLU(max-pool(conv)) exactly, and the
    # gradients agree too (the pool's winner is the ReLU's input cell, or both give 0): the
    # model takes the cheaper order in training and inference, bit for bit the written one.
    seed_everything(0)
    model = create_model("hongong_cnn").eval()
    x = torch.rand(16, 1, 28, 28) - 0.3
    x[:, :, :8] = 0  # a blank band, as around a Fashion-MNIST item: tied windows
    y = torch.randint(0, 10, (16,))

    def step(forward):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = forward(x)
        F.cross_entropy(out.float(), y).backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    written, written_grads = step(lambda t: model.forward_head(model.features(t)))
    fast, fast_grads = step(model)
    assert torch.equal(written, fast)
    assert all(torch.equal(a, b) for a, b in zip(written_grads, fast_grads))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        assert torch.equal(model(x), written)
    seen = []
    handle = model.features.conv1.register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.inference_mode():
        model(x)
    handle.remove()
    # A hooked layer runs as written: its hook sees the activated (non-negative) map.
    assert len(seen) == 1 and seen[0].shape == (16, 32, 28, 28) and seen[0].min() >= 0


def test_fashion_bn_cnn_heads_and_arguments():
    x = torch.zeros(2, 1, 28, 28)
    assert create_model("fashion_bn_cnn")(x).shape == (2, 10)
    assert create_model("fashion_bn_cnn", widths=(16, 32), hidden=64, dropout=0.2)(x).shape == (2, 10)
    assert create_model("fashion_bn_cnn", num_classes=0)(x).shape == (2, 128)
    with pytest.raises(ValueError, match="widths"):
        create_model("fashion_bn_cnn", widths=(0,))


_FAULTS_SCRIPT = """
import resource, sys, torch
from cnnkit.engine.perf import tune_cpu_allocator

applied = tune_cpu_allocator()

def step():
    # A training step's activations: six 16 MiB tensors alive at once, then all freed.
    batch = [torch.ones(4 * 1024 * 1024) for _ in range(6)]
    del batch

# The first steps lay the heap out: their pages are new in any case, and where the kernel put
# the other mappings can cost a tuned heap a one-time extension (up to 12,288 faults measured).
for _ in range(12):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, applied)
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc tuning"
)
def test_tuned_allocator_reuses_freed_tensor_memory():
    # Tuned, ten steps after the heap is laid out reuse its 96 MiB: not one 16 MiB tensor's 4,096
    # pages is faulted in again. Left alone, glibc gives at least the part above its trim
    # threshold (at most 64 MiB) back to the kernel after every step and faults it in again; in
    # training that was ~30,000 page faults per 4 steps of 256 images (docs/performance.md).
    # Whether glibc can grow its heap in place depends on where the kernel put the other
    # mappings; without address randomisation (setarch -R) every run lays memory out the same.
    fixed_layout = ["setarch", "-R"] if shutil.which("setarch") else []

    # The layout also moves with the size of the environment (the stack sits below it): an
    # untuned run happened to reuse its heap with some sizes. Several sizes, the worst of each;
    # the tuned and untuned process of one size run side by side (page faults are per process).
    def start(pad: int, tune: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*fixed_layout, sys.executable, "-c", _FAULTS_SCRIPT],
            stdout=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "OMP_NUM_THREADS": "1",
                "CNNKIT_TEST_PAD": "x" * pad,
                "CNNKIT_TUNE_MALLOC": tune,
            },
        )

    runs: dict[str, list[tuple[int, str]]] = {"1": [], "0": []}
    for pad in (0, 50, 100, 400, 800, 1600):
        procs = {tune: start(pad, tune) for tune in runs}
        for tune, proc in procs.items():
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0
            runs[tune].append((int(out.split()[0]), out.split()[1]))
    (tuned, applied), (untuned, opted_out) = max(runs["1"]), max(runs["0"])
    assert (applied, opted_out) == ("True", "False")
    from cnnkit.engine.perf import tune_cpu_allocator

    assert tune_cpu_allocator(torch.device("cuda")) is False  # GPU tensors: host malloc left alone
    # The worst untuned layout re-faults at least one 16 MiB tensor every step (measured: 60 MiB,
    # 245,440 faults, in 4-5 of these 6 layouts), the worst tuned one not one tensor in ten steps.
    assert untuned >= 10 * 4096
    assert tuned < 4096
