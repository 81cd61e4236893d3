"""cnnkit: convolutional neural networks for computer vision, as the classic CNN course teaches them."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the module that defines it. Imported on first use (PEP 562), so that
# `import cnnkit.runtime` works on a machine without PyTorch.
_EXPORTS = {
    "create_model": ".models",
    "list_models": ".models",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
