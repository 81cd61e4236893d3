"""Registered models. Importing this package registers every family."""

from . import (
    alexnet,  # noqa: F401  (registers alexnet, alexnet_tv)
    efficientnet_lite,  # noqa: F401  (registers efficientnet_lite0 ... 4)
    fast_cnn,  # noqa: F401  (registers fashion_bn_cnn)
    googlenet,  # noqa: F401  (registers googlenet)
    lenet,  # noqa: F401  (registers lenet5)
    resnet,  # noqa: F401  (registers resnet18 ... 152, seresnet18 ... 152)
    seed_cnns,  # noqa: F401  (registers the course CNNs)
    vgg,  # noqa: F401  (registers vgg11 ... vgg19_bn)
    xception,  # noqa: F401  (registers xception)
)
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
