"""Classification + localization: a class and one box per image (Géron 14.8)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

if TYPE_CHECKING:
    from .loss import BOX_LOSSES, box_loss, localization_loss
    from .model import LocalizationOutput, Localizer
    from .task import LocalizeTask
    from .train import evaluate_localizer, fit_localizer, predict_localizer

# Loaded on first use: importing the package (the CLI's parsers do) pays for no torchvision,
# torchmetrics or models.
_EXPORTS = {
    "BOX_LOSSES": ".loss",
    "box_loss": ".loss",
    "localization_loss": ".loss",
    "LocalizationOutput": ".model",
    "Localizer": ".model",
    "LocalizeTask": ".task",
    "evaluate_localizer": ".train",
    "fit_localizer": ".train",
    "predict_localizer": ".train",
}

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
