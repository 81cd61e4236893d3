"""Write an :class:`ExportSource` as an ONNX file with cnnkit metadata inside, checked before it lands.

The graph comes from ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based exporter
that PyTorch maintains; the TorchScript-based one is deprecated) at opset ``OPSET``, with a
dynamic batch axis. The file is written to a temp file next to the destination, loaded back by
ONNX Runtime through :class:`cnnkit.runtime.OnnxModel` (so its metadata is what a deployment
reads) and parity-checked; only a file that passes replaces the destination.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..io.atomic import atomic_save
from ..runtime.metadata import INPUT_NAME, METADATA_KEY, OUTPUTS, encode_metadata
from .parity import ParityReport, check_parity
from .source import ExportSource

OPSET = 18
EXAMPLE_BATCH = 2  # an example batch of 1 would let the exporter fix the batch axis to 1


class ParityError(RuntimeError):
    """The exported model does not match PyTorch within the tolerances (nothing was written)."""

    def __init__(self, report: ParityReport, path: Path) -> None:
        super().__init__(f"{report.line()}: outside the tolerances; {path} was not written")
        self.report = report


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    from .. import __version__

    return {"cnnkit": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}  # fmt: skip


def onnx_model_proto(source: ExportSource) -> Any:
    """The ONNX ModelProto of ``source.graph`` with its metadata, checked by ``onnx.checker``.

    Raises:
        UsageError: a model the exporter cannot trace (an unsupported op, data-dependent control
            flow), in one line naming the exporter's reason.
    """
    import onnx

    example, batch = example_inputs(source)
    chatter = io.StringIO()
    try:
        # The exporter prints its progress and hints to stdout; a command keeps its own output.
        with contextlib.redirect_stdout(chatter), torch.inference_mode(False):
            program = torch.onnx.export(
                source.graph,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUTS[source.task]),
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                verbose=False,
                report=False,
            )
    except Exception as exc:
        raise export_failure(source, "torch.onnx.export cannot export this model", exc) from None
    proto = program.model_proto
    meta = {
        **source.meta,
        "opset": OPSET,
        "versions": versions(),
        "exporter": "torch.onnx.export(dynamo=True)",
    }
    set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    return proto


def example_inputs(source: ExportSource) -> tuple[torch.Tensor, Any]:
    """(an example batch of ``EXAMPLE_BATCH`` prepared test images, the dynamic batch dimension)."""
    example = source.inputs(source.images[:EXAMPLE_BATCH])
    if len(example) < EXAMPLE_BATCH:
        example = example.repeat(EXAMPLE_BATCH, 1, 1, 1)[:EXAMPLE_BATCH]
    return example, torch.export.Dim("batch", min=1, max=65536)


def export_failure(source: ExportSource, what: str, exc: BaseException) -> UsageError:
    """One line for an exporter's failure: the source, ``what`` failed, and the exporter's reason."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return UsageError(f"{source.meta['source']}: {what} ({type(exc).__name__}: {reason[:300]})")


def set_metadata(proto: Any, meta: dict[str, Any]) -> None:
    """Replace the cnnkit entry of ``proto.metadata_props`` with ``meta``."""
    for prop in list(proto.metadata_props):
        if prop.key == METADATA_KEY:
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, encode_metadata(meta)
    proto.producer_name = "cnnkit"
    proto.doc_string = f"cnnkit {meta['task']} model {meta.get('model', '')}: see the 'cnnkit' metadata"


def writable_destination(out: str | os.PathLike[str]) -> Path:
    """``out`` as a Path whose folder exists and is writable.

    Raises:
        UsageError: a folder given as the file, a missing or read-only folder.
    """
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name such as {path / 'model.onnx'}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"--out {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--out {out}: the folder {folder} is not writable")
    return path


def write_checked(
    path: Path, write: Callable[[str], None], check: Callable[[str], ParityReport]
) -> ParityReport:
    """``write(temp)``, then ``check(temp)``; the temp file replaces ``path`` only if the check passes.

    Raises:
        ParityError: the check failed; ``path`` is left as it was and the temp file is removed.
    """
    report: list[ParityReport] = []

    def writer(tmp: str) -> None:
        write(tmp)
        result = check(tmp)
        if not result.passed:
            raise ParityError(result, path)
        report.append(result)

    atomic_save(path, writer)
    return report[0]


def export_onnx(
    source: ExportSource, out: str | os.PathLike[str], *, threads: int | None = None
) -> ParityReport:
    """Write ``source`` to ``out`` as ONNX and parity-check it with ONNX Runtime.

    Raises:
        UsageError: see :func:`onnx_model_proto` and :func:`writable_destination`.
        ParityError: outside the float tolerances (nothing written).
    """
    import onnx

    from ..runtime import OnnxModel

    path = writable_destination(out)
    proto = onnx_model_proto(source)

    def check(tmp: str) -> ParityReport:
        model = OnnxModel(tmp, threads=threads)
        return check_parity(source, model.run)

    return write_checked(path, lambda tmp: onnx.save(proto, tmp), check)
