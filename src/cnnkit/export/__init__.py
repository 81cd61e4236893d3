"""Export runs and zoo models: ONNX (with metadata, for ONNX Runtime) and ``torch.export`` programs.

Every export is parity-checked on real test images before it is written (:mod:`.parity`); int8
ONNX files come from ONNX Runtime's static quantization (:mod:`.int8`). Predicting from an
exported file without PyTorch is :mod:`cnnkit.runtime`.
"""

from .onnx_file import OPSET, ParityError, export_onnx
from .parity import FLOAT_TOLERANCE, INT8_TOLERANCE, ParityReport, check_parity
from .pt2 import export_pt2
from .source import ExportSource, resolve_source

__all__ = [
    "FLOAT_TOLERANCE",
    "INT8_TOLERANCE",
    "OPSET",
    "ExportSource",
    "ParityError",
    "ParityReport",
    "check_parity",
    "export_onnx",
    "export_pt2",
    "resolve_source",
]
