"""Two launcher invocations on 127.0.0.1, as two machines would start theirs (``torchrun
--nnodes 2 --node-rank 0/1`` with a c10d rendezvous on a free port), train one run together,
on an image folder of real Fashion-MNIST items that the two processes decode a share each."""

from __future__ import annotations

import json
import subprocess
import sys

from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.engine.distributed import free_port
from cnnkit.runs.classify import load_splits
from cnnkit.runs.config import RunConfig

from .conftest import finish, worker_env

TRAIN = ["train", "--epochs", "1", "--batch-size", "16"]


def test_two_nodes_train_together_into_one_run_folder(tmp_path, write_fashion_folders):
    images = write_fashion_folders(tmp_path / "data", per_class=20)["flat"]  # 200 files, 10 classes
    tmp_path = tmp_path / "runs"
    tmp_path.mkdir()
    run_dir = tmp_path / "run"
    port = free_port()
    nodes = []
    for node_rank in (0, 1):
        launcher = [
            *(sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"),
            *(f"--node-rank={node_rank}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}"),
            "--rdzv-id=cnnkit-multinode-test",
        ]
        command = [*launcher, "-m", "cnnkit", *TRAIN, "--data", str(images), "--out", str(run_dir)]
        command.append("--no-progress")
        nodes.append(
            subprocess.Popen(
                command, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = [finish(node) for node in nodes]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # one run folder
    record = json.loads((run_dir / "config.json").read_text())
    assert record["distributed"] == {"processes": 2, "backend": "gloo"}
    assert load_checkpoint(run_dir / "last.ckpt")["world_size"] == 2
    # The shares decoded by the two processes, put together, are the splits one process loads.
    train, val, test, _ = load_splits(RunConfig(data=str(images), seed=42))
    assert record["data_sizes"] == {"train": len(train), "val": len(val), "test": len(test)}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_test_samples"] == len(test) == 20  # each test image counted once over both ranks
    rank1 = (run_dir / "logs" / "rank-1.log").read_text()
    assert "rank 1/2" in rank1 and "epoch 1/1" in rank1  # the second node trained its share
    assert "run folder:" in "".join(outputs)  # rank 0 (one of the two) reported it
    # Its checkpoint holds one random state per process: resuming with another count is refused.
    resumed = subprocess.run(
        [sys.executable, "-m", "cnnkit", "train", "--resume", str(run_dir)],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 2
    assert resumed.stderr.strip().splitlines()[-1].endswith("resume it with --nproc 2 (not 1)")
