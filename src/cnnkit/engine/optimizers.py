"""Optimizers by name, with Keras's defaults and PyTorch's fastest update kernels."""

from __future__ import annotations

from typing import Any

import torch

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
KERAS_EPSILON = 1e-7  # keras.optimizers.Adam / AdamW / RMSprop default
# torch.optim's fused kernels (RMSprop has none), for models of at least FUSED_MIN_PARAMS
# weights: a ResNet-18 update on a CPU took under half foreach's time, while for the course's
# small CNNs the update is a sliver of a step and foreach keeps their trained numbers as before.
FUSED = ("adam", "adamw", "sgd")
FUSED_MIN_PARAMS = 1_000_000


def _kernel(name: str, params: list) -> dict[str, bool]:
    """``fused=True`` where a fused kernel exists for every parameter's device and dtype and the
    model is large enough, else ``foreach=True``."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    ok = all(t.device.type in ("cpu", "cuda") and t.is_floating_point() for t in tensors)
    large = sum(t.numel() for t in tensors) >= FUSED_MIN_PARAMS
    return {"fused": True} if name in FUSED and ok and large else {"foreach": True}


def _group(group: dict) -> dict:
    """A parameter group with its ``params`` as a list (torch also takes one tensor or an iterator,
    which counting the weights would split into rows or use up)."""
    params = group["params"]
    return {**group, "params": [params] if isinstance(params, torch.Tensor) else list(params)}


def make_optimizer(
    name: str, params: Any, lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """Build an optimizer by name (fused kernels for large models where PyTorch has them, else foreach).

    Adam, AdamW and RMSprop take Keras's defaults (epsilon 1e-7; RMSprop rho 0.9), which the
    course's results were trained with; PyTorch's own are epsilon 1e-8 and alpha 0.99.
    """
    params = [_group(p) if isinstance(p, dict) else p for p in params]
    kernel = _kernel(name, params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=KERAS_EPSILON, weight_decay=weight_decay, **kernel)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, eps=KERAS_EPSILON, weight_decay=weight_decay, **kernel)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay, **kernel
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=lr, alpha=0.9, eps=KERAS_EPSILON, weight_decay=weight_decay, **kernel
        )
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
