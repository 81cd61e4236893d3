"""Helpers for the tests that start worker groups (each worker on one thread)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from cnnkit.engine.checkpoint import load_checkpoint


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("PYTHONOPTIMIZE", None)
    env.update(extra)
    return env


def cnnkit(*args: str, **popen: object) -> subprocess.Popen:
    """``python -m cnnkit ARGS`` in the background (stdout and stderr captured as text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cnnkit", *args],
        env=worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[arg-type]
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for ``proc``; its stderr, after asserting it exited 0."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    return err


def final_state(run_dir) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """(the model state dict, the history without wall times) that a run's last.ckpt holds."""
    import json

    body = load_checkpoint(run_dir / "last.ckpt")
    history = json.loads((run_dir / "history.json").read_text())
    return body["model"], [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
