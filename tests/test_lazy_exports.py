"""The task packages load their members on first use, and behave like ordinary packages."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    ("package", "name", "module"),
    [
        ("cnnkit.tasks.detection", "YoloDetector", "cnnkit.tasks.detection.model"),
        ("cnnkit.tasks.localization", "BOX_LOSSES", "cnnkit.tasks.localization.loss"),
        ("cnnkit.tasks.segmentation", "SegmentationTrainer", "cnnkit.tasks.segmentation.train"),
    ],
)
def test_members_resolve_to_their_modules(package, name, module):
    pkg = importlib.import_module(package)
    assert getattr(pkg, name) is getattr(importlib.import_module(module), name)
    assert name in dir(pkg) and name in pkg.__all__
    assert all(hasattr(pkg, member) for member in pkg.__all__)
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'nope'"):
        pkg.nope
