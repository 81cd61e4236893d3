"""Looking inside: curves, weights, feature maps, errors, saliency, diagrams, reports."""

from .curves import plot_history

__all__ = ["plot_history"]
