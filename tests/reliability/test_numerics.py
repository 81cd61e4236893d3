"""Non-finite numbers stop training at the step where they appear, with a message naming it, and
never reach a checkpoint: last.ckpt and best.safetensors are absent or from before, all finite."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnkit.cli.__main__ import main
from cnnkit.engine.callbacks import ModelCheckpoint
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.errors import TrainingError
from cnnkit.tasks.classify.task import ClassifyTrainer

STEPS_PER_EPOCH = 8  # 240 training images in batches of 32


class _InfGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class Faulty(nn.Module):
    """A linear classifier that goes wrong at training step ``step`` (counted from 1): its output
    is NaN (``'loss'``) or its gradient is infinite while the loss stays finite (``'gradient'``);
    or its output is NaN in evaluation mode only (``'validation'``)."""

    def __init__(self, fault: str, step: int = 0) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        self.fault, self.step, self.calls = fault, step, 0

    def forward(self, x):
        out = self.body(x)
        if not self.training:
            return out * float("nan") if self.fault == "validation" else out
        self.calls += 1
        if self.calls == self.step:
            out = out * float("nan") if self.fault == "loss" else _InfGradient.apply(out)
        return out


@pytest.fixture(scope="module")
def data(fashion_small):
    train, _ = fashion_small
    return train.take(300, seed=0).split(0.2, seed=42)


def _fit(tmp_path, data, model, **kwargs):
    trainer = ClassifyTrainer(
        model,
        seed=0,
        checkpoint_path=tmp_path / "last.ckpt",
        callbacks=[ModelCheckpoint(tmp_path / "best.safetensors")],
        **kwargs,
    )
    with pytest.raises(TrainingError) as info:
        trainer.fit(*data, epochs=3, batch_size=32)
    return trainer, str(info.value)


def _assert_finite(tensors, where):
    if isinstance(tensors, torch.Tensor):
        assert not tensors.is_floating_point() or bool(torch.isfinite(tensors).all()), where
    elif isinstance(tensors, dict):
        for key, value in tensors.items():
            _assert_finite(value, f"{where}/{key}")
    elif isinstance(tensors, list | tuple):
        for i, value in enumerate(tensors):
            _assert_finite(value, f"{where}/{i}")


def _assert_on_disk(tmp_path, epoch: int) -> None:
    """last.ckpt holds ``epoch`` finished epochs, best.safetensors exists only if epoch >= 1; all finite."""
    body = load_checkpoint(tmp_path / "last.ckpt")
    assert body["epoch"] == epoch
    _assert_finite(body, "last.ckpt")
    assert (tmp_path / "best.safetensors").is_file() == (epoch >= 1)
    if epoch >= 1:
        _assert_finite(load_file(tmp_path / "best.safetensors"), "best.safetensors")


def test_nan_loss_at_step_k_stops_there_and_keeps_the_last_finite_epoch(tmp_path, data):
    k = STEPS_PER_EPOCH + 3  # epoch 2, step 3
    trainer, message = _fit(tmp_path, data, Faulty("loss", k))
    assert "loss became nan at epoch 2, step 3 (global step 11)" in message
    assert trainer.global_step == k - 1  # the bad step changed nothing
    _assert_on_disk(tmp_path, epoch=1)


def test_nan_loss_in_the_first_epoch_leaves_only_the_initial_checkpoint(tmp_path, data):
    _, message = _fit(tmp_path, data, Faulty("loss", 3))
    assert "(global step 3)" in message
    _assert_on_disk(tmp_path, epoch=0)


def test_inf_gradient_on_an_epochs_last_step_never_reaches_a_checkpoint(tmp_path, data):
    # The loss of step 8 is finite, but its update turns the weights into NaN just before the
    # epoch ends; the check of the weights stops training before they are saved.
    trainer, message = _fit(tmp_path, data, Faulty("gradient", STEPS_PER_EPOCH))
    assert "weights became non-finite (body.1.weight) during epoch 1 (global step 8)" in message
    _assert_on_disk(tmp_path, epoch=0)


def test_max_grad_norm_stops_at_the_step_with_the_bad_gradient_before_the_update(tmp_path, data):
    trainer, message = _fit(tmp_path, data, Faulty("gradient", 5), max_grad_norm=1.0)
    assert "gradient norm became nan at epoch 1, step 5 (global step 5)" in message
    _assert_finite(trainer.model.state_dict(), "weights in memory")  # the update was skipped
    _assert_on_disk(tmp_path, epoch=0)


def test_max_grad_norm_clips_and_rejects_nonsense(tmp_path, data):
    model = Faulty("none")
    trainer = ClassifyTrainer(model, seed=0, max_grad_norm=1e-3)
    seen = []
    real_step = trainer.optimizer.step

    def step(*args, **kwargs):
        grads = [p.grad for p in model.parameters()]
        seen.append(
            float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        )
        return real_step(*args, **kwargs)

    trainer.optimizer.step = step
    trainer.fit(data[0], epochs=1, batch_size=32)
    assert len(seen) == STEPS_PER_EPOCH and max(seen) <= 1e-3 * (1 + 1e-5)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
            ClassifyTrainer(nn.Linear(2, 2), max_grad_norm=bad)


def test_nan_validation_loss_stops_before_best_weights_are_saved(tmp_path, data):
    _, message = _fit(tmp_path, data, Faulty("validation"))
    assert "validation loss became nan after epoch 1 (global step 8)" in message
    _assert_on_disk(tmp_path, epoch=0)


def test_adam_at_lr_1e6_stops_with_the_epoch_and_a_hint(small_data, tmp_path, capsys):
    # The case: a finite loss of ~1e28 used to end in exit 0 at 9.5 % accuracy.
    out = tmp_path / "run"
    argv = ["train", "--data", str(small_data), "--lr", "1e6", "--epochs", "2", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cnnkit: error")]
    assert len(lines) == 1 and "in epoch 1 is" in lines[0] and "lower learning rate (now 1e+06" in lines[0]
    assert not (out / "metrics.json").exists() and not (out / "best.safetensors").exists()
    assert load_checkpoint(out / "last.ckpt")["epoch"] == 0  # the diverged epoch was not saved
    assert json.loads((out / "config.json").read_text())["run"]["lr"] == 1e6


def test_on_divergence_warn_trains_on_with_one_warning(small_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(small_data), "--lr", "1e6", "--epochs", "1", "--out", str(out)]
    assert main([*argv, "--on-divergence", "warn", "--no-progress"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "diverged" in line]
    assert len(warnings) == 1 and warnings[0].startswith("cnnkit: warning: training loss")
    assert json.loads((out / "config.json").read_text())["run"]["on_divergence"] == "warn"
    assert (out / "metrics.json").is_file()
