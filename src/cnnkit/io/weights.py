"""The one loader for weights: safetensors first, torch.load only with weights_only=True."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .atomic import atomic_write_bytes


class WeightsError(ValueError):
    """A weights file that cannot be used: unreadable, unsafe, or not matching the model."""


def save_weights(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Write a state dict as safetensors, atomically (the old file survives a failed write)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or (weights only) ``.pth`` / ``.pt`` / ``.bin``.

    Pickled modules, TorchScript archives and anything that needs code execution are refused;
    there is never a fallback to unsafe loading.

    Raises:
        FileNotFoundError: the file does not exist.
        WeightsError: unreadable, unsafe, or not a flat name -> tensor mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path} is not a valid safetensors file: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{path} is not a plain state dict and was refused (cnnkit never unpickles code): {first}. "
            "Save weights with torch.save(model.state_dict(), ...) or as .safetensors"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "weights") -> None:
    """Load ``state`` into ``model``, reporting missing / unexpected keys and shape mismatches by name.

    Raises:
        WeightsError: listing every key that does not fit.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_short(mismatched)}")
    if problems:
        raise WeightsError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def _short(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def torchvision_weights(model_name: str, weights_name: str):  # -> torchvision WeightsEnum member
    """Resolve e.g. ("resnet50", "IMAGENET1K_V2") to torchvision's weights enum member.

    Raises:
        WeightsError: unknown model or weights name, listing the valid ones.
    """
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(model_name)
    except (ValueError, KeyError):
        raise WeightsError(f"torchvision publishes no weights for {model_name!r}") from None
    key = weights_name.split(".")[-1]
    if key == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[key]
    except KeyError:
        valid = [w.name for w in enum]
        raise WeightsError(f"unknown weights {weights_name!r} for {model_name}; valid: {valid}") from None


def metadata_json(**fields: object) -> dict[str, str]:
    """safetensors metadata must be str -> str; store structured values as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
