"""Registered models. Importing this package registers every family."""

from . import seed_cnns  # noqa: F401  (registers the course CNNs)
from ._base import Backbone, FeatureInfo, SequentialCNN
from ._registry import ModelEntry, create_model, list_models, model_entry, register_model

__all__ = [
    "Backbone",
    "FeatureInfo",
    "ModelEntry",
    "SequentialCNN",
    "create_model",
    "list_models",
    "model_entry",
    "register_model",
]
