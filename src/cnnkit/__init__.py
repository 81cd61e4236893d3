"""cnnkit: convolutional neural networks for computer vision, as the classic CNN course teaches them."""

from importlib.metadata import PackageNotFoundError, version

from .data import load_fashion_mnist
from .inspect import summary
from .models import create_model, list_models
from .models._weights import decode_predictions
from .tasks.classify import ClassifyTrainer as Trainer  # the course's task; other tasks: engine.Trainer

try:
    __version__ = version("cnnkit")
except PackageNotFoundError:  # a source tree on the path without an installed distribution
    __version__ = "0+unknown"

__all__ = [
    "Trainer",
    "__version__",
    "create_model",
    "decode_predictions",
    "list_models",
    "load_fashion_mnist",
    "summary",
]
