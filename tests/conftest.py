"""Shared fixtures: the real Fashion-MNIST, loaded once per test session."""

from __future__ import annotations

import pytest

from cnnkit.data import ArrayDataset, load_fashion_mnist


@pytest.fixture(scope="session")
def fashion() -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) of the real Fashion-MNIST (60,000 + 10,000 images)."""
    return load_fashion_mnist()


@pytest.fixture(scope="session")
def fashion_small(fashion) -> tuple[ArrayDataset, ArrayDataset]:
    """A class-balanced real subset: 2,000 training and 500 test images."""
    train, test = fashion
    return train.take(2000, seed=0), test.take(500, seed=0)
