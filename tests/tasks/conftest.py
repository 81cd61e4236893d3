"""Fixtures shared by the task tests."""

from __future__ import annotations

import pytest
import torch

from cnnkit.engine.perf import pick_num_threads


@pytest.fixture(scope="module")
def free_cores():
    """Torch on the cores other processes leave free (on a shared machine, OpenMP threads waiting
    for busy cores stall every op; see cnnkit.engine.perf), restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(pick_num_threads())
    yield
    torch.set_num_threads(before)
