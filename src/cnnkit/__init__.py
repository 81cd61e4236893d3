"""cnnkit: convolutional neural networks for computer vision, as the classic CNN course teaches them."""

from importlib.metadata import PackageNotFoundError, version

from ._lazy import lazy_exports

try:
    __version__ = version("cnnkit")
except PackageNotFoundError:  # a source tree on the path without an installed distribution
    __version__ = "0+unknown"

# Public name -> "module" (or "module:attribute") that defines it, imported on first use
# (PEP 562), so that `import cnnkit.runtime` works on a machine without PyTorch. Add new public
# names here, never as eager imports.
_EXPORTS = {
    "create_model": ".models",
    "list_models": ".models",
    "summary": ".inspect",
    "load_fashion_mnist": ".data",
    "decode_predictions": ".models._weights",
    # The course's task; the engine's task-generic loop is cnnkit.engine.Trainer.
    "Trainer": ".tasks.classify:ClassifyTrainer",
}

__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
