"""The parts of data-parallel training that work in one process: splitting batches (against
hand-made expectations), the CPU SyncBatchNorm outside a group (against nn.BatchNorm2d), the
refusal of a checkpoint from another process count, and the launcher's command line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.cli.train import _without_launch_flags
from cnnkit.engine.distributed import World, map_shared, shard_batch
from cnnkit.engine.sync_batchnorm import SyncBatchNormCPU, convert_sync_batchnorm_cpu
from cnnkit.errors import TrainingError
from cnnkit.tasks.classify.task import ClassifyTrainer
from cnnkit.tasks.detection.task import DetectTask


def test_a_batch_is_split_per_sample_and_settings_pass_through():
    x, y = torch.arange(10).view(5, 2), torch.arange(5)
    batch = (x, y, [{"id": i} for i in range(5)], 255)
    local, n_local, n_global = shard_batch(batch, World(rank=1, size=2))
    assert (n_local, n_global) == (2, 5)  # rank 0 takes 3, rank 1 the last 2
    assert torch.equal(local[0], x[3:]) and torch.equal(local[1], y[3:])
    assert local[2] == [{"id": 3}, {"id": 4}] and local[3] == 255


def test_detection_keeps_the_objects_of_its_images():
    x = torch.zeros(3, 1, 4, 4)
    boxes, labels = torch.arange(20.0).view(5, 4), torch.tensor([7, 8, 9, 10, 11])
    index = torch.tensor([0, 0, 1, 2, 2])  # image of each object
    (lx, lb, ll, li), n_local, n_global = DetectTask(None).shard(  # type: ignore[arg-type]
        (x, boxes, labels, index), World(rank=1, size=2)
    )
    assert (len(lx), n_local, n_global) == (1, 1, 3)  # rank 1 has image 2 only
    assert torch.equal(lb, boxes[3:]) and torch.equal(ll, labels[3:]) and li.tolist() == [0, 0]


def test_map_shared_in_one_process_maps_everything_in_order():
    assert map_shared(list(range(7)), lambda v: v * v) == [v * v for v in range(7)]


def test_sync_batchnorm_outside_a_group_is_batchnorm():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    synced = convert_sync_batchnorm_cpu(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    synced.load_state_dict(plain.state_dict())  # the same keys
    assert isinstance(synced[1], SyncBatchNormCPU)
    x = torch.randn(6, 3, 8, 8)
    assert torch.equal(synced(x), plain(x))
    assert torch.equal(synced[1].running_var, plain[1].running_var)


def test_a_checkpoint_of_two_processes_is_refused_by_one(tmp_path):
    trainer = ClassifyTrainer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), device="cpu")
    state = trainer.state()
    assert state["world_size"] == 1 and state["rng_ranks"] == []
    state["world_size"] = 2
    with pytest.raises(TrainingError, match=r"trained by 2 process\(es\), this run has 1"):
        trainer.load_state(state)


def test_the_launcher_passes_the_command_on_without_its_own_flags():
    argv = ["train", "--nproc", "2", "--epochs", "1", "--max-restarts=3", "--out", "r"]
    assert _without_launch_flags(argv) == ["train", "--epochs", "1", "--out", "r"]
