"""Fixtures for the figure tests: one tiny real training run, trained once per session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from cnnkit.data import ArrayDataset
from cnnkit.runs.classify import load_dataset
from cnnkit.runs.config import RunConfig
from cnnkit.runs.folder import load_run
from cnnkit.runs.train import train_run


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on shared, busy cores a second OpenMP thread only waits (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class TinyRun:
    path: Path
    model: nn.Module
    record: dict
    test: ArrayDataset
    metrics: dict


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """hongong_cnn trained one epoch on 600 real Fashion-MNIST images, tested on 200."""
    out = tmp_path_factory.mktemp("viz") / "run"
    config = RunConfig(limit_train=600, limit_test=200, epochs=1, device="cpu")
    metrics = train_run(config, out, progress=False)
    model, record = load_run(out, device="cpu")
    _, test = load_dataset("fashion-mnist", limit_test=200, seed=config.seed)
    return TinyRun(out, model, record, test, metrics)


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")
