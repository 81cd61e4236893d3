"""The divergence guard: a finite loss that grows a thousandfold stops (or warns about) training
with the epoch and a learning-rate hint, for every task's Trainer."""

from __future__ import annotations

import pytest

from cnnkit import create_model
from cnnkit.engine.callbacks import DivergenceGuard
from cnnkit.errors import TrainingError
from cnnkit.tasks.classify.task import ClassifyTrainer


class _Owner:
    """Just enough of a Trainer for the guard's message: the optimizer's learning rate."""

    def __init__(self, lr: float) -> None:
        self.optimizer = type("Opt", (), {"param_groups": [{"lr": lr}]})()


def _guard(**kwargs) -> DivergenceGuard:
    guard = DivergenceGuard(**kwargs)
    guard.set_trainer(_Owner(0.5))  # type: ignore[arg-type]
    guard.on_train_begin({})
    return guard


def test_three_orders_of_magnitude_over_the_first_batch_is_divergence():
    guard = _guard()
    guard.on_batch_end(0, {"loss": 2.3})
    guard.on_batch_end(1, {"loss": 50.0})  # only the first batch is the reference
    guard.on_epoch_end(0, {"loss": 2300.0})  # exactly 1000 times: still training
    with pytest.raises(
        TrainingError,
        match=r"training loss 2.3e\+03 in epoch 2 .* Try a lower learning rate \(now 0.5; e.g. 0.05\)",
    ):
        guard.on_epoch_end(1, {"loss": 2301.0})


def test_a_loss_that_starts_near_zero_needs_a_real_blow_up():
    guard = _guard(factor=10)
    guard.on_batch_end(0, {"loss": 1e-4})  # floored at 1
    guard.on_epoch_end(0, {"loss": 9.9})
    with pytest.raises(TrainingError):
        guard.on_epoch_end(1, {"loss": 10.1})


def test_warn_goes_on_with_one_line(capsys):
    guard = _guard(action="warn")
    guard.on_batch_end(0, {"loss": 2.0})
    guard.on_epoch_end(4, {"loss": 1e28})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnkit: warning: training loss 1e+28 in epoch 5")


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="factor"):
        DivergenceGuard(factor=1)
    with pytest.raises(ValueError, match="action"):
        DivergenceGuard(action="ignore")


def test_every_trainer_has_it_and_none_turns_it_off():
    model = create_model("hongong_cnn")
    trainer = ClassifyTrainer(model, device="cpu")
    assert sum(isinstance(cb, DivergenceGuard) for cb in trainer.callbacks) == 1
    saved = trainer.state()["callbacks"]  # what a checkpoint keeps: not the guard
    assert list(saved) == ["0:History"]
    off = ClassifyTrainer(model, device="cpu", divergence=None)
    assert not any(isinstance(cb, DivergenceGuard) for cb in off.callbacks)
