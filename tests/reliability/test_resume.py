"""Exact resume: a run stopped after epoch k and resumed ends bit-identical to an uninterrupted
run (weights, optimizer moments, callback states, RNGs, history, metrics; not wall-clock seconds),
through train_run and through `cnnkit train --resume` after a real Ctrl-C (SIGINT)."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest
import torch

from cnnkit.cli.__main__ import parse_command_line
from cnnkit.cli.train_classify import config_from_args
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.engine.trainer import Trainer, seed_everything
from cnnkit.runs.train import train_run
from cnnkit.tasks.classify.task import ClassifyTask

from .conftest import EPOCHS, assert_identical, cnnkit_cmd, run_cli, run_snapshot, subprocess_env, tiny_config


def _interrupt_at_epoch(monkeypatch, k: int) -> None:
    """Ctrl-C as epoch k+1 (0-based k) starts: epochs 1..k are finished and checkpointed."""
    real = Trainer._train_epoch

    def train_epoch(self, data, batch_size, epoch):
        if epoch == k:
            raise KeyboardInterrupt
        return real(self, data, batch_size, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)


@pytest.mark.parametrize("k", [0, 2])
def test_train_run_stopped_after_epoch_k_and_resumed_is_bit_identical(
    k, small_data, reference_run, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    _interrupt_at_epoch(monkeypatch, k)
    with pytest.raises(KeyboardInterrupt):
        train_run(tiny_config(small_data), out, progress=False)
    monkeypatch.undo()
    body = load_checkpoint(out / "last.ckpt")
    assert body["epoch"] == k  # k = 0: the checkpoint written before the first step
    # A new session may start with another thread count (the fast preset picks it from the
    # load); CPU sums split differently round differently, so resume restores the run's own.
    torch.set_num_threads(2)
    train_run(tiny_config(small_data), out, resume=True, progress=False)
    assert torch.get_num_threads() == body["num_threads"] == 1
    assert_identical(run_snapshot(out), run_snapshot(reference_run))


def test_a_whitened_run_resumes_bit_identical_with_its_filters_frozen(
    small_data, tmp_path, monkeypatch, capsys
):
    # The whitening is computed again on resume; the checkpoint then loads the same frozen filters.
    train_run(tiny_config(small_data, whiten=True, epochs=2), tmp_path / "whole", progress=False)
    out = tmp_path / "run"
    _interrupt_at_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train_run(tiny_config(small_data, whiten=True, epochs=2), out, progress=False)
    monkeypatch.undo()
    train_run(tiny_config(small_data, whiten=True, epochs=2), out, resume=True, progress=False)
    whole = run_snapshot(tmp_path / "whole")
    assert_identical(run_snapshot(out), whole)
    first = next(w for w in whole["best"].values() if w.dim() == 4)  # the course CNN's 32 filters
    assert torch.equal(first[9:18], -first[:9])  # 9 directions of a 3×3 patch, then their negatives
    # The run's model, rebuilt from its folder, has that layer frozen again: 32 × 3·3 weights and
    # 32 (zeroed) biases are counted as non-trainable.
    from cnnkit.cli.__main__ import main

    capsys.readouterr()
    assert main(["summary", str(out)]) == 0
    assert "Non-trainable params: 320" in capsys.readouterr().out


def test_a_run_that_stopped_early_stays_stopped_when_resumed(small_data, tmp_path, monkeypatch):
    # patience 0 and a rate too high for this small set: the validation loss rises in the second
    # epoch and early stopping ends the run there. (At lr 0.01 the stop came at epoch 5 or 8
    # depending on the thread count: too close to the end to tell a stopped run apart.)
    config = tiny_config(small_data, epochs=8, patience=0, lr=0.05)
    reference = train_run(config, tmp_path / "reference", progress=False)
    assert reference["stopped_early"] and reference["epochs_run"] < 8

    # Interrupted after training, while scoring the test set: last.ckpt holds the stopped state.
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ClassifyTask, "scores", staticmethod(interrupt))
    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "run", progress=False)
    monkeypatch.undo()
    resumed = train_run(config, tmp_path / "run", resume=True, progress=False)
    assert resumed["epochs_run"] == reference["epochs_run"]  # no extra epochs after the stop
    assert_identical(run_snapshot(tmp_path / "run"), run_snapshot(tmp_path / "reference"))


def test_ctrl_c_saves_a_resumable_checkpoint_and_cli_resume_is_bit_identical(
    small_data, reference_run, tmp_path
):
    out = tmp_path / "run"
    args = ["train", "--data", str(small_data), "--epochs", str(EPOCHS), "--patience", str(EPOCHS)]
    args += ["--precision", "fp32"]  # the reference run's (RunConfig's) float32 numerics
    proc = subprocess.Popen(
        cnnkit_cmd(*args, "--out", str(out), "--no-progress"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        # A shell runs background jobs with SIGINT ignored, and a child inherits that; give the
        # child the normal disposition so the test means the same wherever the suite is started.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 300
        ckpt = out / "last.ckpt"
        while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        # last.ckpt is written before the first step, then replaced (a new file) after each epoch:
        # time the first epoch, then interrupt somewhere in the second, however fast the machine.
        first, start = ckpt.stat().st_ino, time.monotonic()
        while ckpt.stat().st_ino == first and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(random.uniform(0.0, 0.5 * (time.monotonic() - start)))
        assert proc.poll() is None, "training ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("cnnkit:")]
    assert lines == [
        f"cnnkit: interrupted; {out / 'last.ckpt'} holds the last finished epoch. "
        f"Continue with: cnnkit train --resume {out}"
    ], stderr
    saved = load_checkpoint(out / "last.ckpt")
    assert 0 <= saved["epoch"] < EPOCHS

    resumed = run_cli("train", "--resume", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "test accuracy" in resumed.stdout
    assert (out / "report.html").is_file()
    assert_identical(run_snapshot(out), run_snapshot(reference_run))


def test_resume_refuses_settings_that_would_change_the_run(tmp_path, capsys):
    from cnnkit.cli.__main__ import main

    assert main(["train", "--resume", str(tmp_path), "--epochs", "9", "--seed", "3"]) == 2
    err = capsys.readouterr().err.strip()
    expected = f"--resume continues {tmp_path} with the settings saved in it; drop --epochs, --seed"
    assert err == f"cnnkit: error: {expected}"


def test_deterministic_flag_seeds_everything_and_turns_on_deterministic_algorithms(small_data, tmp_path):
    args = parse_command_line(["train", "--data", str(small_data), "--deterministic", "--seed", "5"])
    config = config_from_args(args, "classify")
    assert config.deterministic and config.seed == 5
    try:
        draws = []
        for _ in range(2):
            seed_everything(config.seed, config.deterministic)
            draws.append((random.random(), float(__import__("numpy").random.rand()), torch.rand(3)))
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert draws[0][:2] == draws[1][:2] and torch.equal(draws[0][2], draws[1][2])
        torch.use_deterministic_algorithms(False)
        train_run(tiny_config(small_data, epochs=1, deterministic=True), tmp_path / "run", progress=False)
        assert torch.are_deterministic_algorithms_enabled()  # the run switched them on
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_config_file_settings_are_not_overridden_by_flag_defaults(small_data, tmp_path):
    (tmp_path / "run.json").write_text(f'{{"data": "{small_data}", "seed": 7, "epochs": 2}}')
    config = config_from_args(
        parse_command_line(["train", "--config", str(tmp_path / "run.json")]), "classify"
    )
    assert (config.data, config.seed, config.epochs) == (str(small_data), 7, 2)
    args = parse_command_line(["train", "--config", str(tmp_path / "run.json"), "--seed", "42"])
    config = config_from_args(args, "classify")
    assert config.seed == 42  # a flag that is given does override


def test_a_run_config_json_given_to_config_repeats_that_run(small_data, reference_run):
    # `--config FILE` takes a run's own config.json (its "run" section), as its help says.
    args = parse_command_line(["train", "--config", str(reference_run / "config.json")])
    assert config_from_args(args, "classify") == tiny_config(small_data)


def test_a_run_interrupted_with_progress_resumes_with_no_progress(
    small_data, reference_run, tmp_path, monkeypatch
):
    # F3: the progress bar is display, not state; the resumed run is the uninterrupted one.
    out = tmp_path / "run"
    _interrupt_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_run(tiny_config(small_data), out, progress=True)
    monkeypatch.undo()
    assert not any(key.endswith("ProgressBar") for key in load_checkpoint(out / "last.ckpt")["callbacks"])
    train_run(tiny_config(small_data), out, resume=True, progress=False)
    assert_identical(run_snapshot(out), run_snapshot(reference_run))
