"""One ranked class of one image: what `cnnkit predict` prints, from PyTorch or ONNX Runtime.

Kept apart from the models (no torch here), so that predicting with an exported file needs
ONNX Runtime alone.
"""

from __future__ import annotations

from typing import NamedTuple


class Prediction(NamedTuple):
    """One ranked class of one image."""

    rank: int
    index: int
    name: str
    probability: float
