"""Inspection: summaries (shapes, parameters, MACs, memory) and forward hooks."""

from .._lazy import lazy_exports

# Imported on first use (PEP 562): reading an input shape needs no torch (`cnnkit shape`).
_EXPORTS = {
    "LayerRow": ".summary",
    "Summary": ".summary",
    "format_summary": ".summary",
    "human_bytes": ".summary",
    "parse_input_shape": ".input_shape",
    "read_input_shape": ".input_shape",
    "summary": ".summary",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
