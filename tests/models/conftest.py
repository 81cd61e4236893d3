"""Shared settings for the model-zoo tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_intra_op_thread() -> Iterator[None]:
    """Run these tests on one thread, then restore the setting.

    The batches are tiny (2 images of 28-71 pixels): splitting each small op over threads costs
    more in synchronisation than it saves, and on a busy 2-core machine the waiting threads
    multiply CPU time many times over (measured: GoogLeNet forward+backward 4.8 s vs 0.06 s).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
