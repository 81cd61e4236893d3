"""Reading Keras 3 weight files (``.weights.h5`` and ``.keras``) as plain arrays, with h5py only.

Nothing in the file is ever executed: the HDF5 datasets are read as numeric arrays, and a
``.keras`` archive's ``config.json`` is parsed as JSON (the layer order and settings), never
deserialised into Keras objects; custom layers or lambdas in it are not run, only named.

Keras 3 stores each layer's variables under ``layers/<layer name>/vars/0, 1, ...`` (kernel,
then bias), in channels-last layouts: Conv2D kernels (kh, kw, cin, cout), Dense kernels (in, out).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .weights import WeightsError

__all__ = ["KERAS_SUFFIXES", "KerasLayer", "read_keras_weights"]

KERAS_SUFFIXES = (".keras", ".h5")
_ARCHIVE_WEIGHTS = "model.weights.h5"
_ARCHIVE_CONFIG = "config.json"
# A .keras archive holds small JSON and the weights; anything bigger is not one we wrote.
_MAX_ARCHIVE_MEMBER = 2 << 30


@dataclass(frozen=True)
class KerasLayer:
    """One Keras layer that has variables.

    Attributes:
        name: the layer's name in the file (``conv2d_1``).
        arrays: its variables in Keras order (kernel, bias, ...), float32, Keras layouts.
        class_name: ``"Conv2D"``, ``"Dense"``... from a ``.keras`` archive's config; None for a
            bare ``.weights.h5`` (which does not record classes).
        config: the layer's config from the archive (filters, padding, activation...), or {}.
    """

    name: str
    arrays: list[np.ndarray]
    class_name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


def _natural(name: str) -> tuple[str, int]:
    """Keras auto-names layers conv2d, conv2d_1, conv2d_2 ... in creation order."""
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    base, number = match.group(1), match.group(2)
    return base, int(number) + 1 if number is not None else 0


def _read_h5(handle: Any, source: str) -> dict[str, list[np.ndarray]]:
    import h5py

    try:
        with h5py.File(handle, "r") as f:
            layers = f.get("layers")
            if not isinstance(layers, h5py.Group):
                raise WeightsError(
                    f"{source} is not a Keras 3 weights file (no 'layers' group; Keras 2 .h5 files "
                    "are not read: load the model in Keras 3 and save it with model.save('x.keras'))"
                )
            out: dict[str, list[np.ndarray]] = {}
            for name, group in layers.items():
                variables = group.get("vars") if isinstance(group, h5py.Group) else None
                if not isinstance(variables, h5py.Group) or not len(variables):
                    continue
                keys = sorted(variables.keys(), key=lambda k: int(k) if k.isdigit() else -1)
                arrays = []
                for key in keys:
                    data = variables[key]
                    if not isinstance(data, h5py.Dataset) or data.dtype.kind not in "fiu":
                        raise WeightsError(f"{source}: layers/{name}/vars/{key} is not a numeric array")
                    arrays.append(np.asarray(data[()], dtype=np.float32))
                out[name] = arrays
    except OSError as exc:
        raise WeightsError(f"{source} is not a readable HDF5 file: {exc}") from None
    return out


def _archive_member(archive: zipfile.ZipFile, member: str, source: str) -> bytes:
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise WeightsError(f"{source} is not a Keras 3 .keras archive: it has no {member}") from None
    if info.file_size > _MAX_ARCHIVE_MEMBER:
        raise WeightsError(f"{source}: {member} is {info.file_size} bytes, more than a weights file holds")
    return archive.read(member)


def _config_layers(config: Any, source: str) -> list[dict[str, Any]]:
    """The layer list of a Sequential / Functional model config (JSON only)."""
    layers = (config.get("config") or {}).get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise WeightsError(f"{source}: config.json has no layer list (a Sequential or Functional model)")
    return layers


def read_keras_weights(path: str | os.PathLike[str]) -> list[KerasLayer]:
    """The layers with variables of a Keras 3 file, in model order.

    In a ``.keras`` archive the order and classes come from its config.json. A bare
    ``.weights.h5`` records neither, so its layers are ordered by Keras' automatic names
    (``conv2d`` < ``conv2d_1`` < ... < ``dense`` < ``dense_1``: creation order within a kind).

    Raises:
        FileNotFoundError: no such file.
        WeightsError: not a Keras 3 weights file or archive, or a non-numeric variable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras file {path} does not exist")
    source = str(path)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                weights = _archive_member(archive, _ARCHIVE_WEIGHTS, source)
                config_bytes = _archive_member(archive, _ARCHIVE_CONFIG, source)
        except zipfile.BadZipFile as exc:
            raise WeightsError(f"{source} is a damaged .keras archive: {exc}") from None
        try:
            config = json.loads(config_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WeightsError(f"{source}: config.json is not valid JSON: {exc}") from None
        arrays = _read_h5(io.BytesIO(weights), source)
        out = []
        for layer in _config_layers(config, source):
            name = (layer.get("config") or {}).get("name")
            if name in arrays:
                out.append(
                    KerasLayer(name, arrays.pop(name), layer.get("class_name"), layer.get("config") or {})
                )
        if arrays:
            raise WeightsError(f"{source}: weights of {sorted(arrays)} belong to no layer in config.json")
        return out
    arrays = _read_h5(str(path), source)
    return [KerasLayer(name, arrays[name]) for name in sorted(arrays, key=_natural)]
