"""Looking inside: curves, weights, feature maps, errors, saliency, diagrams, reports.

Plot functions return matplotlib Figures (save them with :func:`save_figure`); the data behind
each figure comes from a separate function (``filter_tiles``, ``feature_maps``, ``grad_cam``,
``most_confident_errors``, ``trace_graph``) so it can be checked or reused without drawing.
"""

from ._common import predict_proba, save_figure, to_model_input
from .confusion import Mistake, confusion_counts, most_confident_errors, plot_confusion_matrix, plot_mistakes
from .curves import plot_history
from .diagram import layout_graph, plot_diagram, plot_model_diagram, save_diagram
from .feature_maps import feature_maps, plot_feature_maps, plot_layer_maps
from .filters import filter_tiles, layer_weight, plot_filters, plot_weight_histograms, weight_stats
from .gradcam import Saliency, grad_cam, gradient_saliency, plot_saliency, saliency
from .report import build_report, write_report

__all__ = [
    "Mistake",
    "Saliency",
    "build_report",
    "confusion_counts",
    "feature_maps",
    "filter_tiles",
    "grad_cam",
    "gradient_saliency",
    "layer_weight",
    "layout_graph",
    "most_confident_errors",
    "plot_confusion_matrix",
    "plot_diagram",
    "plot_feature_maps",
    "plot_filters",
    "plot_history",
    "plot_layer_maps",
    "plot_mistakes",
    "plot_model_diagram",
    "plot_saliency",
    "plot_weight_histograms",
    "predict_proba",
    "saliency",
    "save_diagram",
    "save_figure",
    "to_model_input",
    "weight_stats",
    "write_report",
]
