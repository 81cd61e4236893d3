"""A registered model with pretrained weights everywhere but a new head (the start of fine-tuning).

The weights come from a cnnkit run folder (whose config also names the model and its options),
a state-dict file, or a torchvision weights name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UsageError
from ..io.weights import load_state_dict_file, load_strict
from ..models import create_model
from ..models.surgery import head_parameter_names
from .classify import read_run_config
from .folder import BEST_WEIGHTS

__all__ = ["WEIGHT_SUFFIXES", "pretrained_model"]


def _weights_source(
    name: str | None,
    weights: str | os.PathLike[str],
    in_chans: int | None,
    model_kwargs: Mapping[str, Any],
) -> tuple[str, int | None, dict[str, Any], dict[str, Any] | None]:
    """(model name, in_chans, model kwargs, run record or None), filled in from a run folder."""
    path = Path(weights)
    if not path.is_dir():
        if name is None:
            raise UsageError(f"--model is needed: {weights} is not a cnnkit run folder that names one")
        return name, in_chans, dict(model_kwargs), None
    record = read_run_config(path)
    run = record["run"]
    if name is not None and name != run["model"]:
        raise UsageError(f"{weights} holds {run['model']!r} weights, not {name!r}; drop --model or match it")
    kwargs = dict(run.get("model_kwargs") or {})
    for key, value in model_kwargs.items():
        if key in kwargs and kwargs[key] != value:
            raise UsageError(f"{weights} was trained with {key}={kwargs[key]!r}, not {value!r}")
        kwargs[key] = value
    run_chans = int(record["input_shape"][0])
    if in_chans is not None and in_chans != run_chans:
        raise UsageError(f"{weights} was trained on {run_chans}-channel images, not {in_chans}-channel ones")
    return run["model"], run_chans, kwargs, record


WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def _is_weights_name(weights: str | os.PathLike[str]) -> bool:
    """A torchvision weights name ("IMAGENET1K_V1"), as opposed to a file or run folder."""
    path = Path(weights)
    return not path.exists() and path.suffix not in WEIGHT_SUFFIXES and os.sep not in str(weights)


def pretrained_model(
    name: str | None,
    weights: str | os.PathLike[str],
    num_classes: int,
    *,
    in_chans: int | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """A registered model with pretrained weights everywhere but a new, freshly initialised head.

    Args:
        name: registered model name; None takes it from a run folder ``weights``.
        weights: what ``create_model(weights=...)`` accepts: a cnnkit run folder, a
            ``.safetensors`` / ``.pth`` state dict, or a torchvision weights name
            (``"IMAGENET1K_V1"``). The source's classifier (any number of classes, or none) is
            dropped; every other tensor must fit exactly.
        num_classes: outputs of the new head.
        in_chans: input channels (default: the run's, or the model's).
        **model_kwargs: builder options such as ``small_input=True`` (a run folder's own are
            applied too).

    Raises:
        UsageError: a run folder that contradicts ``name`` / ``in_chans`` / ``model_kwargs``.
        WeightsError: tensors that do not fit, listed by name.
    """
    name, in_chans, kwargs, _ = _weights_source(name, weights, in_chans, model_kwargs)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    head = set(head_parameter_names(model))
    path = Path(weights)
    if _is_weights_name(weights):  # torchvision's: let the registry fetch them into the original model
        state = create_model(name, in_chans=in_chans, weights=str(weights), **kwargs).state_dict()
    else:
        state = load_state_dict_file(path / BEST_WEIGHTS if path.is_dir() else path)
    own = model.state_dict()
    merged = {k: v for k, v in state.items() if k not in head}
    merged.update({k: own[k] for k in head})
    load_strict(model, merged, source=str(weights))
    return model
