"""Device choice, made once and passed down (never hard-coded)."""

from __future__ import annotations

import torch

from ..errors import UsageError


def pick_device(name: str | None = None) -> torch.device:
    """``name`` if given ('cpu', 'cuda', 'cuda:1', 'mps'), else CUDA, then MPS, then the CPU.

    Raises:
        UsageError: a named device that this machine does not have.
    """
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UsageError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise UsageError(f"device {name!r} requested but MPS is not available here; use --device cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
