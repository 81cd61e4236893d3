"""Classification + localization: a class and one box per image (Géron 14.8)."""

from __future__ import annotations

from .loss import BOX_LOSSES, box_loss, localization_loss
from .model import LocalizationOutput, Localizer
from .task import LocalizeTask
from .train import evaluate_localizer, fit_localizer, predict_localizer

__all__ = [
    "BOX_LOSSES",
    "LocalizationOutput",
    "LocalizeTask",
    "Localizer",
    "box_loss",
    "evaluate_localizer",
    "fit_localizer",
    "localization_loss",
    "predict_localizer",
]
