"""Loading published or saved weights into a registered model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..io.weights import load_state_dict_file, load_strict


def load_pretrained(model: nn.Module, name: str, weights: str | Path) -> None:
    """Load ``weights`` into ``model`` in place.

    Args:
        model: the freshly built model.
        name: its registry name (used to resolve torchvision weights names).
        weights: a local ``.safetensors`` / ``.pth`` / ``.pt`` state dict, a cnnkit run folder
            (its ``best.safetensors``), or a torchvision weights name like ``"IMAGENET1K_V1"``.

    Raises:
        FileNotFoundError / ValueError: with the file, key or name that is wrong.
    """
    path = Path(weights)
    if path.is_dir():
        candidate = path / "best.safetensors"
        if not candidate.exists():
            raise FileNotFoundError(f"{path} is not a cnnkit run folder: {candidate.name} is missing")
        path = candidate
    if path.suffix in (".safetensors", ".pth", ".pt", ".bin") or path.exists():
        state = load_state_dict_file(path)
    else:
        state = _torchvision_state_dict(name, str(weights))
    load_strict(model, state, source=str(weights))


def _torchvision_state_dict(name: str, weights_name: str) -> dict[str, torch.Tensor]:
    from ..io.weights import torchvision_weights

    enum_value = torchvision_weights(_torchvision_name(name), weights_name)
    return enum_value.get_state_dict(progress=False, check_hash=True)


def _torchvision_name(name: str) -> str:
    return name[: -len("_tv")] if name.endswith("_tv") else name
