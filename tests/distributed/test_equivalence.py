"""Data-parallel training is the one-process training, split: 2 gloo processes × batch 16 end
with the weights of 1 process × batch 32 (engine/distributed.py).

The reference is the same engine in one process with the global batch. Tolerances: the ranks
sum their gradients in another order (two means of 16, averaged, against one mean of 32), so
results agree to float rounding, which SGD carries forward step by step. ResNet-18 trains one
step of 21 images (shares of 11 and 10): at 28×28 its last stage normalises 1×1 maps, and from
the second step on its BatchNorm statistics of a few near-equal values amplify rounding beyond
any fixed bound (measured on an AVX2 CPU: 0.06 after a second step of 5 images, 4e-3 after one
of 16, where a 1e-7 relative change of the weights already gives 4e-3); one step agrees to
4e-7. Without SyncBatchNorm each rank normalises by its own images: the weights then differ by
orders of magnitude more than the tolerance (0.12; the check that the comparison can fail). The
YOLO detector (BatchNorm in its head) after 2 steps: 1e-5 with SyncBatchNorm (measured 6e-8),
1.5e-2 without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnkit.engine.distributed import shard_range

from ._task_cases import VAL_IMAGES, prepare_models

WORKER = Path(__file__).with_name("_equivalence_worker.py")
# max |difference| of any weight or buffer
TOLERANCE = {
    "hongong_cnn": 1e-6,
    "hongong_cnn_ema": 1e-6,
    "resnet18_sync_bn": 1e-5,
    "detect_sync_bn": 1e-5,
    "segment_by_pixels": 1e-5,
}
LOSS_RTOL = {
    "hongong_cnn": 1e-6,
    "hongong_cnn_ema": 1e-6,
    "resnet18_sync_bn": 1e-4,
    "detect_sync_bn": 1e-5,
}  # relative, epoch losses


def _env() -> dict[str, str]:
    import os

    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, dict, list[list[str]]]:
    tmp = tmp_path_factory.mktemp("equivalence")
    one, two, models = tmp / "one.pt", tmp / "two.pt", tmp / "models.pt"
    prepare_models(models)  # the weights that both runs validate
    single = subprocess.Popen(
        [sys.executable, str(WORKER), str(one), str(models)], env=_env(), stderr=subprocess.PIPE, text=True
    )
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    pair = subprocess.run(
        [*launch, str(WORKER), str(two), str(models)], env=_env(), capture_output=True, text=True, timeout=300
    )
    _, single_err = single.communicate(timeout=300)
    assert single.returncode == 0, single_err[-3000:]
    assert pair.returncode == 0, pair.stderr[-3000:]
    assert "terminate called" not in pair.stderr + pair.stdout
    threads = [Path(f"{two}.threads-{rank}").read_text().split() for rank in (0, 1)]
    return torch.load(one, weights_only=True), torch.load(two, weights_only=True), threads


def test_ranks_leave_with_every_gloo_thread_joined(runs):
    """distributed.shutdown destroys the group and frees what held it, so gloo's threads (worker
    "pt_gloo_runloop", transport "gloo_tcp_loop") end before the interpreter's own teardown, in
    which their ending once aborted a worker ("terminate called without an active exception")."""
    for names in runs[2]:
        assert names and not [name for name in names if "gloo" in name], names


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for key in a:
        if a[key].is_floating_point():
            worst = max(worst, float((a[key] - b[key]).abs().max()))
        else:  # BatchNorm's num_batches_tracked: the same count of steps
            assert torch.equal(a[key], b[key]), key
    return worst


# hongong_cnn_ema: with a moving average of the weights (Trainer ema), which the model holds at
# the end and validation scored; the trained weights agree too, and differ from the average.
@pytest.mark.parametrize("case", ["hongong_cnn", "hongong_cnn_ema", "resnet18_sync_bn"])
def test_two_ranks_train_like_one_process_with_their_global_batch(runs, case):
    one, two = runs[0][case], runs[1][case]
    assert one["steps"] == two["steps"] == {"resnet18_sync_bn": 1}.get(case, 4)
    assert _max_difference(one["state"], two["state"]) <= TOLERANCE[case]
    if case == "hongong_cnn_ema":
        assert _max_difference(one["trained"], two["trained"]) <= TOLERANCE[case]
        assert _max_difference(one["trained"], one["state"]) > 1e3 * TOLERANCE[case]
    if case == "resnet18_sync_bn":  # the running statistics are among the buffers compared above
        assert any("running_var" in k for k in one["state"])
    (row1,), (row2,) = one["history"], two["history"]
    assert row1.keys() == row2.keys()
    # Accuracies count the same images once (train: 21 or 101; validation: 41).
    assert row1["accuracy"] == row2["accuracy"] and row1["val_accuracy"] == row2["val_accuracy"]
    for key in ("loss", "val_loss"):
        assert row2[key] == pytest.approx(row1[key], rel=LOSS_RTOL[case])


def test_local_batchnorm_is_not_the_global_batch(runs):
    one, two = runs[0]["resnet18_local_bn"], runs[1]["resnet18_local_bn"]
    assert _max_difference(one["state"], two["state"]) > 100 * TOLERANCE["resnet18_sync_bn"]


def test_detection_with_sync_bn_trains_like_one_process(runs):
    """YoloLoss sums over a rank's images and divides by their number, which the engine's share
    weight (share × N / global) turns into the global batch's sum over its images: the loss is
    exact. What differed was BatchNorm in the detector's head: each rank normalised by its 16."""
    one, two = runs[0]["detect_sync_bn"], runs[1]["detect_sync_bn"]
    assert one["steps"] == two["steps"] == 2  # 37 scenes: 32, then 5 split 3 / 2
    assert _max_difference(one["state"], two["state"]) <= TOLERANCE["detect_sync_bn"]
    (row1,), (row2,) = one["history"], two["history"]
    for key in ("loss", "box_loss", "objectness_loss", "class_loss"):
        assert row2[key] == pytest.approx(row1[key], rel=LOSS_RTOL["detect_sync_bn"])
    local = runs[1]["detect_local_bn"]["state"]
    assert _max_difference(runs[0]["detect_local_bn"]["state"], local) > 100 * TOLERANCE["detect_sync_bn"]


def test_segmentation_weights_ranks_by_their_labelled_pixels(runs):
    """Pixel cross-entropy is a mean over a rank's labelled pixels; with ignored pixels the ranks
    hold different numbers of them, and the task's ``loss_units`` weight each rank's loss by its
    share of the global batch's pixels (measured 6e-8). Weighted by images instead, the ranks'
    average is not the global mean (measured 1.6e-3)."""
    one, two = runs[0]["segment_by_pixels"], runs[1]["segment_by_pixels"]
    assert one["steps"] == two["steps"] == 2
    assert _max_difference(one["state"], two["state"]) <= TOLERANCE["segment_by_pixels"]
    assert two["history"][0]["loss"] == pytest.approx(one["history"][0]["loss"], rel=1e-6)
    by_images = runs[1]["segment_by_images"]["state"]
    assert (
        _max_difference(runs[0]["segment_by_images"]["state"], by_images)
        > 10 * TOLERANCE["segment_by_pixels"]
    )


@pytest.mark.parametrize("task", ["localize", "detect", "segment", "mask_rcnn"])
def test_two_ranks_validate_like_one_process(runs, task):
    """Each rank scores its share of the 9 images (5 and 4); gathered predictions (mAP, IoU) or
    summed confusion counts (mIoU) count every image once. The weights are the same; only the
    batches differ (a share against all 9), so float sums may differ in the last bits: 1e-6."""
    one, two = runs[0]["validation"][task], runs[1]["validation"][task]
    assert two["validate"] == pytest.approx(one["validate"], rel=1e-6, abs=1e-7)
    if task == "segment":  # every labelled pixel of the 9 images counted once
        confusion = torch.tensor(two["evaluate"]["confusion_matrix"])
        assert confusion.tolist() == one["evaluate"]["confusion_matrix"]
        assert int(confusion.sum()) == VAL_IMAGES * 32 * 32 and two["evaluate"]["num_images"] == VAL_IMAGES
        assert one["validate"]["miou"] > 0.1
    elif task == "detect":
        assert two["evaluate"]["ap_per_class"] == pytest.approx(one["evaluate"]["ap_per_class"], abs=1e-7)
        assert one["validate"]["map_50"] > 0.5
    elif task == "localize":
        assert one["validate"]["mean_iou"] > 0.5 and 0 < one["validate"]["accuracy_iou50"] < 1
    else:  # Mask R-CNN as built finds nothing yet: the sharded scoring runs and agrees
        assert two["evaluate"] == one["evaluate"]


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
