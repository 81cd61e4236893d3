"""A worker killed mid-epoch: the elastic launcher restarts the group, which resumes from the
run folder's last checkpoint and ends bit-identical to an uninterrupted 2-process run (the
checkpoint holds each rank's random state; the per-epoch order is drawn from the seed)."""

from __future__ import annotations

import os
import re
import signal
import time

from cnnkit.engine.checkpoint import CheckpointError, load_checkpoint

from .conftest import assert_same_weights, cnnkit, final_state, finish

# 1,600 training images: 50 steps of 2 × 16 an epoch, 3 epochs, every image once per epoch.
ARGS = ["train", "--limit-train", "2000", "--limit-test", "200", "--epochs", "3", "--batch-size", "16"]
ARGS += ["--seed", "3", "--patience", "5", "--no-progress", "--nproc", "2"]


def _checkpoint_epoch(run_dir) -> int:
    try:
        return int(load_checkpoint(run_dir / "last.ckpt")["epoch"])
    except (FileNotFoundError, CheckpointError):
        return -1


def _rank1_pid(run_dir) -> int | None:
    log = run_dir / "logs" / "rank-1.log"
    found = re.findall(r"pid (\d+) restart 0", log.read_text()) if log.is_file() else []
    return int(found[-1]) if found else None


def test_killed_worker_restarts_and_ends_like_an_uninterrupted_run(tmp_path):
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    reference = cnnkit(*ARGS, "--out", str(clean))
    run = cnnkit(*ARGS, "--out", str(faulty), "--max-restarts", "1")
    deadline = time.monotonic() + 240
    while _checkpoint_epoch(faulty) < 1:  # epoch 1 is saved: epoch 2 runs now
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.02)
    pid = _rank1_pid(faulty)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed_after = _checkpoint_epoch(faulty)
    err = finish(run)
    finish(reference)
    assert killed_after == 1  # the kill came before epoch 2 ended: mid-epoch 2
    log = (faulty / "logs" / "rank-1.log").read_text()
    assert "restart 1" in log  # the launcher started the group again
    after_restart = log.split("restart 1", 1)[1]
    assert re.search(r"^epoch 2/3", after_restart, re.M)  # and it redid epoch 2 from the checkpoint
    assert "resuming from" in err
    weights, history = final_state(faulty)
    weights_ref, history_ref = final_state(clean)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history == history_ref
    assert_same_weights(weights, weights_ref)
