"""Shared pieces for the reliability tests: a tiny real data folder, one reference run, and
helpers that compare two run folders bit for bit (everything but wall-clock seconds)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from cnnkit.data import write_idx
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.runs.config import RunConfig
from cnnkit.runs.train import train_run

# 300 training images (240 train + 60 validation) and 100 test images of the real Fashion-MNIST.
TRAIN_IMAGES = 300
TEST_IMAGES = 100
EPOCHS = 4


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread here and in every subprocess (OMP_NUM_THREADS=1), so that runs split
    across processes add up floating-point numbers in the same order, and the shared cores stay free."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextlib.contextmanager
def no_figures():
    """Skip curves.png and report.html in in-process runs: they are drawn from the history these
    tests already compare, have their own tests in tests/viz, and cost seconds of matplotlib each."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cnnkit.viz.curves.plot_history", lambda *args, **kwargs: None)
        patch.setattr("cnnkit.viz.report.write_report", lambda *args, **kwargs: None)
        yield


@pytest.fixture(autouse=True)
def _no_figures():
    with no_figures():
        yield


@pytest.fixture(scope="session")
def small_data(fashion, tmp_path_factory) -> Path:
    """A folder of MNIST-format IDX files holding a class-balanced real subset (fast to load)."""
    train, test = fashion
    folder = tmp_path_factory.mktemp("fashion-small")
    for split, data, n in (("train", train, TRAIN_IMAGES), ("t10k", test, TEST_IMAGES)):
        part = data.take(n, seed=0)
        write_idx(folder / f"{split}-images-idx3-ubyte", part.images[:, 0].numpy())
        write_idx(folder / f"{split}-labels-idx1-ubyte", part.labels.to(torch.uint8).numpy())
    return folder


def tiny_config(data: Path, **overrides: Any) -> RunConfig:
    """The run every exactness test repeats: 4 epochs of 8 steps, no early stop."""
    settings = {"data": str(data), "epochs": EPOCHS, "batch_size": 32, "patience": EPOCHS, "seed": 42}
    settings.update(overrides)
    return RunConfig(**settings).validate()


@pytest.fixture(scope="session")
def reference_run(small_data, tmp_path_factory) -> Path:
    """The uninterrupted run that interrupted-and-resumed runs must reproduce exactly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("reference") / "run"
        with no_figures():
            train_run(tiny_config(small_data), out, progress=False)
    finally:
        torch.set_num_threads(before)
    return out


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("PYTHONOPTIMIZE", None)
    env.update(extra)
    return env


def cnnkit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cnnkit.cli", *args]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        cnnkit_cmd(*args), capture_output=True, text=True, timeout=timeout, env=subprocess_env()
    )


def _drop_seconds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def run_snapshot(folder: Path) -> dict[str, Any]:
    """Everything a run folder holds that must not depend on interruptions: final checkpoint
    (weights, optimizer moments, callback states, RNGs, counters), best weights, history, metrics."""
    body = load_checkpoint(folder / "last.ckpt")
    for key in ("checksum", "cnnkit_version", "torch_version"):
        body.pop(key)
    callbacks = body["callbacks"]
    for key in callbacks:
        if key.endswith(":History"):
            callbacks[key] = _drop_seconds(json.loads(callbacks[key]["epochs"]))
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in ("train_seconds", "wall_seconds_this_session"):
        metrics.pop(key)
    return {
        "checkpoint": body,
        "best": load_file(folder / "best.safetensors"),
        "history": _drop_seconds(json.loads((folder / "history.json").read_text())),
        "metrics": metrics,
        "run": json.loads((folder / "config.json").read_text())["run"],
    }


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Recursive equality; tensors must match in dtype, shape and every bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(_bits(a), _bits(b)), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a, key=str) == sorted(b, key=str), (
            f"{where}: {list(a)} != {list(b)}"
        )
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}/{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def seal(data: bytes) -> bytes:
    """Give a torch.save zip the integrity record save_checkpoint adds (written independently here):
    the archive comment ``cnnkit-sha256:<hex>`` over every byte before it."""
    assert data[-22:-18] == b"PK\x05\x06" and data[-2:] == b"\0\0"
    comment_length = (14 + 64).to_bytes(2, "little")
    head = data[:-2] + comment_length
    return head + b"cnnkit-sha256:" + hashlib.sha256(head).hexdigest().encode()
