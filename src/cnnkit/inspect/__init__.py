"""Inspection: summaries (shapes, parameters, MACs, memory) and forward hooks."""

from ..input_shape import parse_input_shape, read_input_shape
from .summary import (
    LayerRow,
    Summary,
    format_summary,
    human_bytes,
    summary,
)

__all__ = [
    "LayerRow",
    "Summary",
    "format_summary",
    "human_bytes",
    "parse_input_shape",
    "read_input_shape",
    "summary",
]
