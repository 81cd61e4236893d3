"""Write an :class:`ExportSource` as a ``torch.export`` program (``.pt2``), parity-checked.

``torch.export`` is PyTorch's maintained successor of TorchScript: the saved program loads with
``torch.export.load(path).module()`` (it needs PyTorch, unlike ONNX). The cnnkit metadata is
stored as the extra file ``cnnkit.json`` inside the archive.
"""

from __future__ import annotations

import os

import torch

from ..runtime.metadata import encode_metadata
from .onnx_file import example_inputs, export_failure, writable_destination, write_checked
from .parity import ParityReport, check_parity
from .source import ExportSource

METADATA_FILE = "cnnkit.json"


def export_pt2(source: ExportSource, out: str | os.PathLike[str]) -> ParityReport:
    """Write ``source`` to ``out`` with ``torch.export.save`` and parity-check the loaded program.

    Raises:
        UsageError: a model ``torch.export`` cannot capture, or an unusable destination.
        ParityError: outside the float tolerances (nothing written).
    """
    from .. import __version__

    path = writable_destination(out)
    example, batch = example_inputs(source)
    try:
        program = torch.export.export(source.graph, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:
        raise export_failure(source, "torch.export cannot capture this model", exc) from None
    meta = {
        **source.meta,
        "versions": {"cnnkit": __version__, "torch": torch.__version__},
        "exporter": "torch.export",
    }

    def write(tmp: str) -> None:
        torch.export.save(program, tmp, extra_files={METADATA_FILE: encode_metadata(meta)})

    def check(tmp: str) -> ParityReport:
        module = torch.export.load(tmp).module()

        def run(x):
            with torch.inference_mode():
                return [t.numpy() for t in module(torch.from_numpy(x))]

        return check_parity(source, run)

    return write_checked(path, write, check)
