"""Data-parallel training is the one-process training, split: 2 gloo processes × batch 16 end
with the weights of 1 process × batch 32 (engine/distributed.py).

The reference is the same engine in one process with the global batch. Tolerances: the ranks
sum their gradients in another order (two means of 16, averaged, against one mean of 32), so
results agree to float rounding, which SGD carries forward step by step; through ResNet-18's
BatchNorm layers (1×1 maps in its last stage at 28×28) rounding grows by about 100× a step, and
the same one-process run on 1 and on 2 threads already differs by 6e-3 in its weights after 3
steps. Without SyncBatchNorm each rank normalises by its own 16 images: the weights then differ
by orders of magnitude more than the tolerance (the check that the comparison can fail).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnkit.engine.distributed import shard_range

WORKER = Path(__file__).with_name("_equivalence_worker.py")
TOLERANCE = {"hongong_cnn": 1e-6, "resnet18_sync_bn": 2e-4}  # max |difference| of any weight or buffer
LOSS_RTOL = {"hongong_cnn": 1e-6, "resnet18_sync_bn": 1e-4}  # relative, epoch losses


def _env() -> dict[str, str]:
    import os

    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, dict]:
    tmp = tmp_path_factory.mktemp("equivalence")
    one, two = tmp / "one.pt", tmp / "two.pt"
    single = subprocess.Popen(
        [sys.executable, str(WORKER), str(one)], env=_env(), stderr=subprocess.PIPE, text=True
    )
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    pair = subprocess.run(
        [*launch, str(WORKER), str(two)], env=_env(), capture_output=True, text=True, timeout=300
    )
    _, single_err = single.communicate(timeout=300)
    assert single.returncode == 0, single_err[-3000:]
    assert pair.returncode == 0, pair.stderr[-3000:]
    return torch.load(one, weights_only=True), torch.load(two, weights_only=True)


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for key in a:
        if a[key].is_floating_point():
            worst = max(worst, float((a[key] - b[key]).abs().max()))
        else:  # BatchNorm's num_batches_tracked: the same count of steps
            assert torch.equal(a[key], b[key]), key
    return worst


@pytest.mark.parametrize("case", ["hongong_cnn", "resnet18_sync_bn"])
def test_two_ranks_train_like_one_process_with_their_global_batch(runs, case):
    one, two = runs[0][case], runs[1][case]
    assert one["steps"] == two["steps"] == {"hongong_cnn": 4, "resnet18_sync_bn": 2}[case]
    assert _max_difference(one["state"], two["state"]) <= TOLERANCE[case]
    if case == "resnet18_sync_bn":  # the running statistics are among the buffers compared above
        assert any("running_var" in k for k in one["state"])
    (row1,), (row2,) = one["history"], two["history"]
    assert row1.keys() == row2.keys()
    # Accuracies count the same images once (train: 37 or 101; validation: 41).
    assert row1["accuracy"] == row2["accuracy"] and row1["val_accuracy"] == row2["val_accuracy"]
    for key in ("loss", "val_loss"):
        assert row2[key] == pytest.approx(row1[key], rel=LOSS_RTOL[case])


def test_local_batchnorm_is_not_the_global_batch(runs):
    one, two = runs[0]["resnet18_local_bn"], runs[1]["resnet18_local_bn"]
    assert _max_difference(one["state"], two["state"]) > 100 * TOLERANCE["resnet18_sync_bn"]


def test_shares_of_a_global_batch_cover_it_once_as_evenly_as_possible():
    for n in range(0, 40):
        for size in (1, 2, 3, 8):
            ranges = [shard_range(n, rank, size) for rank in range(size)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, in rank order
            sizes = [stop - start for start, stop in ranges]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_map_shared_has_each_rank_compute_its_share_and_all_receive_everything(runs):
    one, two = runs[0]["map_shared"], runs[1]["map_shared"]
    assert one["values"] == two["values"] == [v * v for v in range(7)]
    assert one["computed"] == [list(range(7))]
    assert two["computed"] == [[0, 1, 2, 3], [4, 5, 6]]  # shard_range(7, rank, 2)
