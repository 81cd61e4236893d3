"""cnnkit: convolutional neural networks for computer vision, as the classic CNN course teaches them."""

from .models import create_model, list_models
from .models._weights import decode_predictions as decode_predictions  # public: cnnkit.decode_predictions

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]
