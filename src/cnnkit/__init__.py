"""cnnkit: convolutional neural networks for computer vision, as the classic CNN course teaches them."""

from ._lazy import lazy_exports

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first use (PEP 562), so that
# `import cnnkit.runtime` works on a machine without PyTorch. Add new public names here.
_EXPORTS = {
    "create_model": ".models",
    "list_models": ".models",
}

__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
