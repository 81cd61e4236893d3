"""`cnnkit finetune --nproc 2`: both phases of fine-tuning (head on a frozen base, then all
layers) run under DDP through the launcher of `cnnkit train --nproc`, and end with the weights
of one process with the global batch.

The model is fashion_bn_cnn (BatchNorm, no dropout) from a state-dict file, fine-tuned on 48
real Fashion-MNIST training images (38 train / 10 validation: batches of 16, 16 and 6) and
tested on 20. With --sync-bn the BatchNorm layers of phase 2 normalise by the global batch; the
frozen base's stay in eval mode in phase 1. Tolerance: float rounding of the ranks' summed
gradients, carried through 6 SGD steps: 1e-5 on every weight and running statistic (measured
2.4e-7).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from cnnkit.models import create_model

from .conftest import cnnkit, final_state, finish

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    weights = tmp / "source.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("fashion_bn_cnn").state_dict().items()}, weights)
    args = ["finetune", "--model", "fashion_bn_cnn", "--weights", str(weights), "--data", "fashion-mnist"]
    args += ["--limit-train", "48", "--limit-test", "20", "--head-epochs", "1", "--full-epochs", "1"]
    args += ["--optimizer", "sgd", "--lr", "0.01", "--seed", "0", "--no-progress", "--sync-bn"]
    args += ["--precision", "fp32"]  # float32 sums: the equality below is to float tolerance
    single = cnnkit(*args, "--batch-size", "16", "--out", str(tmp / "one"))
    pair = cnnkit(*args, "--batch-size", "8", "--nproc", "2", "--out", str(tmp / "two"))
    finish(single)
    err = finish(pair)
    assert "terminate called" not in err
    return tmp / "one", tmp / "two"


def test_two_processes_finetune_like_one_with_the_global_batch(runs):
    (one_state, one_history), (two_state, two_history) = (final_state(run) for run in runs)
    assert one_state.keys() == two_state.keys()
    assert any("running_var" in key for key in one_state)  # BatchNorm statistics compared too
    floats = [k for k in one_state if one_state[k].is_floating_point()]
    worst = max(float((one_state[k] - two_state[k]).abs().max()) for k in floats)
    assert worst <= TOLERANCE
    assert [row["phase"] for row in two_history] == [1.0, 2.0]
    for row1, row2 in zip(one_history, two_history, strict=True):
        assert row2["accuracy"] == row1["accuracy"] and row2["val_accuracy"] == row1["val_accuracy"]
        assert row2["loss"] == pytest.approx(row1["loss"], rel=1e-5)
        assert row2["val_loss"] == pytest.approx(row1["val_loss"], rel=1e-5)


def test_rank_zero_writes_the_run_folder_and_the_test_counts_each_image_once(runs):
    one, two = runs
    config = json.loads((two / "config.json").read_text())
    assert config["distributed"] == {"processes": 2, "backend": "gloo"}
    assert config["finetune"]["sync_bn"] is True and config["finetune"]["batch_size"] == 8
    metrics1, metrics2 = (json.loads((run / "metrics.json").read_text()) for run in runs)
    assert metrics1["num_test_samples"] == metrics2["num_test_samples"] == 20
    assert metrics2["confusion_matrix"] == metrics1["confusion_matrix"]
    assert (two / "logs" / "rank-1.log").read_text().startswith("rank 1/2")
    assert not (one / "logs").exists()
