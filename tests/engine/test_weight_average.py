"""The moving average of the weights (Trainer ``ema``): checked against a NumPy average of the
recorded weights, on a small real Fashion-MNIST subset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnkit import create_model
from cnnkit.engine import seed_everything
from cnnkit.engine.callbacks import Callback
from cnnkit.engine.weight_average import WeightAverage
from cnnkit.errors import TrainingError
from cnnkit.tasks.classify.task import ClassifyTrainer


@pytest.fixture(scope="module")
def small(fashion_small):
    train, _ = fashion_small
    tr, val = train.take(480, seed=1).split(0.25, seed=0)
    return tr, val


def make(ema=None, **kw):
    seed_everything(0)
    # BatchNorm too: its running statistics are averaged with the weights.
    model = create_model("fashion_bn_cnn", widths=[8, 16])
    return ClassifyTrainer(model, seed=0, device="cpu", optimizer="sgd", lr=0.05, ema=ema, **kw)


class RecordSteps(Callback):
    """The model's weights and buffers after every optimizer step."""

    def __init__(self):
        self.steps = []

    def on_batch_end(self, batch, logs):
        weights = self.trainer.model.state_dict()
        self.steps.append({k: v.detach().double().clone() for k, v in weights.items()})


# 0.5: the warm-up for 7 updates, then 0.5; 0.9: the warm-up throughout (it reaches 0.9 at n = 80).
@pytest.mark.parametrize("decay", [0.5, 0.9])
def test_the_average_is_the_exponential_average_of_every_step_and_validation_uses_it(small, decay):
    tr, val = small
    trainer, record = make(ema=decay), RecordSteps()
    history = trainer.fit(tr, val, epochs=2, batch_size=60, verbose=0, callbacks=[record])
    assert len(record.steps) == 12 == trainer.weight_average.steps
    # average_1 = weights_1; average_t = d × average_(t-1) + (1 - d) × weights_t with the
    # warm-up d = min(decay, (1 + n) / (10 + n)), n = t - 1 (TensorFlow's num_updates rule), in float64.
    expected = {k: v.numpy() for k, v in record.steps[0].items()}
    for n, step in enumerate(record.steps[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * step[k].numpy() for k in expected}
    held = trainer.model.state_dict()
    for name, value in expected.items():
        if "num_batches_tracked" in name:  # a counter, not averaged
            assert int(held[name]) == 12
            continue
        np.testing.assert_allclose(held[name].double().numpy(), value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert not torch.equal(held["head.classifier.weight"], record.steps[-1]["head.classifier.weight"].float())
    # The last epoch's validation scored the averaged weights the model now holds.
    assert history.epochs[-1]["val_loss"] == pytest.approx(trainer.evaluate(val)["loss"], rel=1e-6)


def test_the_average_only_watches_training_goes_on_from_its_own_weights(small):
    tr, val = small
    plain, averaged = make(), make(ema=0.99)
    plain.fit(tr, val, epochs=2, batch_size=60, verbose=0)
    averaged.fit(tr, val, epochs=2, batch_size=60, verbose=0)
    own = averaged.state()["model"]
    for name, value in plain.model.state_dict().items():
        assert torch.equal(own[name], value), name


def test_resume_restores_the_average_and_the_training_weights_exactly(small, tmp_path):
    tr, val = small
    straight = make(ema=0.95)
    straight.fit(tr, val, epochs=2, batch_size=60, verbose=0)
    first = make(ema=0.95, checkpoint_path=tmp_path / "last.ckpt")
    first.fit(tr, val, epochs=1, batch_size=60, verbose=0)
    resumed = make(ema=0.95)
    resumed.load_checkpoint(tmp_path / "last.ckpt")
    resumed.fit(tr, val, epochs=2, batch_size=60, verbose=0)
    assert resumed.history.epochs[-1]["val_loss"] == straight.history.epochs[-1]["val_loss"]
    for name, value in straight.model.state_dict().items():  # the averages
        assert torch.equal(resumed.model.state_dict()[name], value), name
    for name, value in straight.state()["model"].items():  # the training weights
        assert torch.equal(resumed.state()["model"][name], value), name
    with pytest.raises(TrainingError, match=r"with a weight average \(--ema\) and this run has none"):
        make().load_checkpoint(tmp_path / "last.ckpt")


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1, "0.9"])
def test_a_decay_outside_zero_to_one_is_refused(decay):
    with pytest.raises(ValueError, match="decay must be between 0 and 1"):
        WeightAverage(decay)


def test_cli_train_ema_saves_the_average_as_best_and_keeps_training_weights_to_resume(tmp_path, capsys):
    from safetensors.torch import load_file

    from cnnkit.cli.__main__ import main
    from cnnkit.engine.checkpoint import load_checkpoint

    out = tmp_path / "run"
    argv = ["train", "--preset", "fast", "--ema", "0.9", "--limit-train", "600", "--limit-test", "200"]
    assert main([*argv, "--epochs", "1", "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert json.loads((out / "config.json").read_text())["run"]["ema"] == 0.9
    best, body = load_file(out / "best.safetensors"), load_checkpoint(out / "last.ckpt")
    assert body["weight_average"]["steps"] == body["global_step"] > 0
    average, training = body["weight_average"]["average"], body["model"]
    for name, value in best.items():  # the one epoch's weights kept as best are the average
        assert torch.equal(value, average[name]), name
    assert not torch.equal(average["head.classifier.weight"], training["head.classifier.weight"])
