"""Classification + localization: a class and one box per image (Géron 14.8)."""

from .loss import BOX_LOSSES, box_loss, localization_loss
from .model import LocalizationOutput, Localizer
from .train import evaluate_localizer, fit_localizer, predict_localizer

__all__ = [
    "BOX_LOSSES",
    "LocalizationOutput",
    "Localizer",
    "box_loss",
    "evaluate_localizer",
    "fit_localizer",
    "localization_loss",
    "predict_localizer",
]
