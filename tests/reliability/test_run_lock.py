"""F2: a run folder has one writer. Two trainings on one --out: exactly one runs, the other exits
2 naming the first; a lock left by a killed process is taken over with a message; resume refuses
files of two different runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from cnnkit.errors import UsageError
from cnnkit.runs.folder import LOCK_FILE, open_folder, release_folder
from cnnkit.runs.train import train_run

from .conftest import cnnkit_cmd, run_cli, subprocess_env, tiny_config


def _wait_for(path, process, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _write_lock(folder, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": host or socket.gethostname(), "since": "2026-01-01 00:00:00"}
    (folder / LOCK_FILE).write_text(json.dumps(owner))


def test_two_trainings_on_one_out_exactly_one_runs(small_data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", str(small_data), "--epochs", "2", "--batch-size", "32", "--out", str(out)]
    first = subprocess.Popen(
        cnnkit_cmd(*args, "--seed", "1", "--no-progress"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        _wait_for(out / "last.ckpt", first)  # claimed, and training has begun
        first.send_signal(signal.SIGSTOP)  # hold it mid-run, so that the two surely overlap
        second = run_cli(*args, "--seed", "2", "--no-progress")
        first.send_signal(signal.SIGCONT)
        _, first_err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, first_err
    assert second.returncode == 2, second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("cnnkit: error")]
    assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
    assert f"is in use by PID {first.pid} on {socket.gethostname()}" in errors[0]
    # Everything in the folder is the first run's (seed 1), and the lock went with it.
    assert json.loads((out / "config.json").read_text())["run"]["seed"] == 1
    assert torch.load(out / "last.ckpt", weights_only=True)["seed"] == 1
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2
    assert not (out / LOCK_FILE).exists()


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_message(small_data, tmp_path, capsys):
    killed = _sleeper()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    out = tmp_path / "run"
    _write_lock(out, killed.pid)
    metrics = train_run(tiny_config(small_data, epochs=1), out, progress=False)
    err = capsys.readouterr().err
    assert f"{out / LOCK_FILE} was left by PID {killed.pid}" in err and "taking the run folder over" in err
    assert metrics["epochs_run"] == 1 and (out / "metrics.json").is_file()
    assert not (out / LOCK_FILE).exists()


def test_a_live_owner_is_named_and_the_folder_left_alone(tmp_path):
    alive = _sleeper()
    try:
        _write_lock(tmp_path / "run", alive.pid)
        before = (tmp_path / "run" / LOCK_FILE).read_bytes()
        with pytest.raises(UsageError, match=rf"in use by PID {alive.pid} on {socket.gethostname()}"):
            open_folder(tmp_path / "run", resume=False)
        assert (tmp_path / "run" / LOCK_FILE).read_bytes() == before
    finally:
        alive.kill()
        alive.wait()
    # On another machine the PID means nothing here: never taken over, the owner is named.
    _write_lock(tmp_path / "other", 1, host="elsewhere.example")
    with pytest.raises(UsageError, match=r"PID 1 on elsewhere.example .*delete .*\.cnnkit\.lock"):
        open_folder(tmp_path / "other", resume=False)


def test_claim_is_released_and_a_new_empty_folder_removed(tmp_path):
    out = tmp_path / "new"
    open_folder(out, resume=False)
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    release_folder(out)
    assert not out.exists()  # nothing was written: the folder goes with the lock


def test_resume_refuses_a_checkpoint_of_another_run(reference_run, small_data, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    record = json.loads((run / "config.json").read_text())
    record["run"]["seed"] = 7  # config.json of one run, last.ckpt of another (seed 42)
    (run / "config.json").write_text(json.dumps(record))
    result = run_cli("train", "--resume", str(run), "--no-progress")
    assert result.returncode == 2, result.stderr
    assert "seed 42" in result.stderr and "seed 7" in result.stderr and "different runs" in result.stderr
