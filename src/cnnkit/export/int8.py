"""Static int8 ONNX files through ONNX Runtime's quantization tools (QDQ format).

This is the maintained path that replaces eager ``torch.ao.quantization`` (which this PyTorch
marks as deprecated): the float ONNX graph is pre-processed (shape inference, fusions),
calibrated on training images (never test images) by min/max, and quantized with per-channel
int8 weights and uint8 activations, as ONNX Runtime recommends for x86 CPUs. The result is
parity-checked against the float PyTorch model with the int8 tolerance (decisions only).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..runtime.metadata import INPUT_NAME, METADATA_KEY
from .onnx_file import onnx_model_proto, set_metadata, writable_destination, write_checked
from .parity import ParityReport, check_parity
from .source import ExportSource

CALIBRATION_BATCH = 64


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over prepared images, one batch at a time."""

    def __init__(self, images: np.ndarray) -> None:
        self.batches = iter(
            [images[i : i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_file(float_path: Path, out: str, calibration: np.ndarray) -> dict[str, Any]:
    """Quantize the float ONNX file ``float_path`` to ``out``; returns how (for the metadata)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = float_path.with_name("prepared.onnx")
    quant_pre_process(str(float_path), str(prepared))
    quantize_static(
        str(prepared),
        out,
        _Calibration(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "weights": "int8 per channel",
        "activations": "uint8",
        "calibration": "MinMax",
        "calibration_images": len(calibration),
    }


def export_onnx_int8(
    source: ExportSource, out: str | os.PathLike[str], *, threads: int | None = None
) -> ParityReport:
    """Write ``source`` as a static int8 ONNX file, calibrated on its training images, parity-checked.

    Raises:
        UsageError: not a classification run with training images (fine-tuned runs, zoo models and
            scene tasks export in float).
        ParityError: decisions agree less than the int8 tolerance (nothing written).
    """
    import onnx

    from ..runtime import OnnxModel

    if source.task != "classify" or source.calibration is None:
        raise UsageError(
            f"{source.meta['source']}: --int8 calibrates on a classification run's own training images; "
            "this is a fine-tuned run, a zoo model or a scene task: export it in float (leave out --int8)"
        )
    path = writable_destination(out)
    proto = onnx_model_proto(source)
    meta = next(json.loads(p.value) for p in proto.metadata_props if p.key == METADATA_KEY)
    calibration = source.inputs(source.calibration).numpy()

    def write(tmp: str) -> None:
        with tempfile.TemporaryDirectory(prefix="cnnkit-int8-") as work:
            float_path = Path(work) / "float.onnx"
            onnx.save(proto, str(float_path))
            meta["int8"] = quantize_file(float_path, tmp, calibration)
        quantized = onnx.load(tmp)
        set_metadata(quantized, meta)
        onnx.save(quantized, tmp)

    def check(tmp: str) -> ParityReport:
        return check_parity(source, OnnxModel(tmp, threads=threads).run, int8=True)

    return write_checked(path, write, check)
