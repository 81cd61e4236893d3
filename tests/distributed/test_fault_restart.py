"""Faults in a 2-process run on localhost. A worker killed mid-epoch: the elastic launcher
restarts the group, which resumes from the run folder's last checkpoint. Then the whole group
killed outright: `--resume` with the same `--nproc` continues it. The run ends bit-identical to
an uninterrupted 2-process run (the checkpoint holds each rank's random state; the per-epoch
order is drawn from the seed)."""

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


def _wait_for_epoch(run_dir, epoch: int, proc, deadline: float) -> None:
    while _checkpoint_epoch(run_dir) < epoch:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)


def _rank1_pid(run_dir) -> int | None:
    log = run_dir / "logs" / "rank-1.log"
    found = re.findall(r"pid (\d+) restart 0", log.read_text()) if log.is_file() else []
    return int(found[-1]) if found else None


def test_killed_workers_restart_or_resume_and_end_like_an_uninterrupted_run(tmp_path):
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    reference = cnnkit(*ARGS, "--out", str(clean))
    run = cnnkit(*ARGS, "--out", str(faulty), "--max-restarts", "1", start_new_session=True)
    deadline = time.monotonic() + 240
    _wait_for_epoch(faulty, 1, run, deadline)  # epoch 1 is saved: epoch 2 runs now
    pid = _rank1_pid(faulty)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed_after = _checkpoint_epoch(faulty)
    _wait_for_epoch(faulty, 2, run, deadline)  # the restarted group saved epoch 2: epoch 3 runs
    os.killpg(run.pid, signal.SIGKILL)  # launcher and workers, outright
    killed_outright_after = _checkpoint_epoch(faulty)
    run.communicate()
    finish(cnnkit("train", "--resume", str(faulty), "--nproc", "2", "--no-progress"))
    finish(reference)
    assert killed_after == 1 and killed_outright_after == 2  # both kills came mid-epoch
    log = (faulty / "logs" / "rank-1.log").read_text()
    after_restart = log.split("restart 1", 1)[1]  # the launcher started the group again...
    assert re.search(r"^epoch 2/3", after_restart, re.M)  # ...which redid epoch 2 from the checkpoint
    weights, history = final_state(faulty)
    weights_ref, history_ref = final_state(clean)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history == history_ref
    assert_same_weights(weights, weights_ref)
