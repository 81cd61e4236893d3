"""kill -9 of a training process while it writes checkpoints: what is on disk is always a whole,
verified checkpoint (the old one or the new one), and resuming from it ends exactly where an
uninterrupted run ends."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.errors import UsageError
from cnnkit.io.atomic import TEMP_PREFIX
from cnnkit.runs.train import train_run

from .conftest import assert_identical, run_snapshot, subprocess_env, tiny_config

TRIALS = 6

# One Python process imports torch once and forks a training per trial (the children do no
# work before the fork, so no thread pool is copied). Each child runs the real train_run; only
# fsync of checkpoint temp files is slowed, like a slow disk, so that kills land mid-write often.
# Even trials kill a random time after the start; odd trials wait for a checkpoint temp file to
# appear (the 2nd or 3rd write, when an older checkpoint exists) and kill inside that write.
_SERVER = r"""
import json, os, random, signal, sys, time
from pathlib import Path

from cnnkit.io import atomic
from cnnkit.runs.config import RunConfig
from cnnkit.runs.train import train_run

config = RunConfig(**json.loads(sys.argv[1]))
base, trials, fsync_seconds = Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rng = random.Random(int(sys.argv[5]))
report = []
for trial in range(trials):
    out = base / f"trial{trial}"
    pid = os.fork()
    if pid == 0:
        real_fsync = os.fsync

        def slow_fsync(fd):
            name = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.basename(name).startswith(atomic.TEMP_PREFIX) and name.endswith(".ckpt"):
                time.sleep(fsync_seconds)
            real_fsync(fd)

        os.fsync = slow_fsync
        train_run(config, out, progress=False)
        os._exit(0)
    start = time.monotonic()
    entry = {"trial": trial}
    if trial % 2 == 0:
        delay = rng.uniform(0.05, 2.5)
        time.sleep(delay)
        entry["mode"], entry["delay"] = "random", delay
    else:
        target = rng.choice([2, 3])  # which checkpoint write to interrupt (1 is the epoch-0 one)
        seen = set()
        while len(seen) < target and time.monotonic() - start < 120:
            if out.is_dir():
                seen |= {p.name for p in out.glob(atomic.TEMP_PREFIX + "*.ckpt")}
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, fsync_seconds / 2))
        entry["mode"], entry["write"] = "in-write", target
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    entry["killed"] = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    entry["seconds"] = time.monotonic() - start
    report.append(entry)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def killed_runs(small_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("kill9")
    config = tiny_config(small_data).to_dict()
    result = subprocess.run(
        [sys.executable, "-c", _SERVER, json.dumps(config), str(base), str(TRIALS), "0.3", "20260523"],
        capture_output=True,
        text=True,
        timeout=600,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    return base, json.loads(result.stdout.strip().splitlines()[-1])


def test_after_kill_9_the_checkpoint_is_whole_and_resume_matches_an_uninterrupted_run(
    killed_runs, small_data, reference_run
):
    base, report = killed_runs
    expected = run_snapshot(reference_run)
    left_temps = 0
    for entry in report:
        out = base / f"trial{entry['trial']}"
        temps = sorted(out.glob(TEMP_PREFIX + "*")) if out.is_dir() else []
        left_temps += bool(temps)
        if not (out / "last.ckpt").is_file():
            # Killed before the first checkpoint: there is nothing to resume, and resume says so.
            with pytest.raises(UsageError, match="no last.ckpt"):
                train_run(tiny_config(small_data), out, resume=True, progress=False)
            continue
        body = load_checkpoint(out / "last.ckpt")  # whole and verified, or this raises
        history = json.loads(body["callbacks"]["0:History"]["epochs"])
        assert len(history) == body["epoch"] and body["global_step"] == 8 * body["epoch"], entry
        if entry["mode"] == "in-write":
            # Killed inside checkpoint write N: the file holds write N-1 (epoch N-2), or write N
            # if the rename beat the kill.
            assert body["epoch"] in (entry["write"] - 2, entry["write"] - 1), (entry, body["epoch"])
        train_run(tiny_config(small_data), out, resume=True, progress=False)
        assert list(out.glob(TEMP_PREFIX + "*")) == []  # strays from the killed write are cleaned
        assert_identical(run_snapshot(out), expected, f"trial {entry['trial']}")
    assert all(entry["killed"] for entry in report), report
    # The targeted kills land inside a write: its temp file is left behind, and ignored.
    assert left_temps >= 1, report
