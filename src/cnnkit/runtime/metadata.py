"""What ``cnnkit export`` stores inside an ONNX file, and reading it back (no torch).

One ``metadata_props`` entry, ``cnnkit``, holds a JSON object:

- ``format``: ``"cnnkit-onnx/1"``;
- ``task``: ``classify``, ``localize``, ``detect`` or ``segment``;
- ``class_names``; ``model``; ``source`` (the run folder or zoo model exported);
- ``preprocess``: the fields of :class:`cnnkit.data.preprocess.Preprocess` (size, channels,
  resize mode, interpolation, scale, mean, std, channel order, ...);
- ``input`` and ``outputs``: tensor names; ``opset``;
- ``versions`` (cnnkit, torch, onnx exporter); ``test_metric`` (name and value from the run's
  ``metrics.json``, or null); ``postprocess`` (detection thresholds); ``int8`` when quantized.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import DataError

METADATA_KEY = "cnnkit"
FORMAT = "cnnkit-onnx/1"
TASKS = ("classify", "localize", "detect", "segment")
# The tensors each task's graph has, in order (the input is always INPUT_NAME).
INPUT_NAME = "images"
OUTPUTS = {
    "classify": ["logits"],
    "localize": ["logits", "boxes"],
    "detect": ["boxes", "scores"],
    "segment": ["logits"],
}
PREPROCESS_FIELDS = (
    "size",
    "channels",
    "resize",
    "crop_fraction",
    "interpolation",
    "scale",
    "mean",
    "std",
    "channel_order",
    "fill",
    "background",
    "fashion_mnist",
)


def encode_metadata(meta: dict[str, Any]) -> str:
    return json.dumps(meta, ensure_ascii=False, sort_keys=True)


def read_metadata(props: dict[str, str], where: str) -> dict[str, Any] | None:
    """The cnnkit metadata of a model's ``metadata_props`` (None: a file from elsewhere).

    Raises:
        DataError: a ``cnnkit`` entry that is not the format this version writes.
    """
    text = props.get(METADATA_KEY)
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: its cnnkit metadata is not valid JSON ({exc}); export it again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"{where}: cnnkit metadata of format {found!r}, this version reads {FORMAT!r}")
    if meta.get("task") not in TASKS:
        raise DataError(f"{where}: cnnkit metadata names task {meta.get('task')!r}, not one of {TASKS}")
    missing = [k for k in ("class_names", "preprocess", "input", "outputs") if k not in meta]
    if missing:
        raise DataError(f"{where}: cnnkit metadata lacks {', '.join(missing)}; export it again")
    return meta
