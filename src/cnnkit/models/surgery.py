"""Weight surgery on backbones: load a classifier's weights into a headless backbone, find the
head, freeze the base (batch norm included) and group parameters by learning rate.

The building blocks of transfer learning (:mod:`cnnkit.tasks.finetune`) and of the localize,
detect and segment tasks, which start from a trained classifier. Works on any model with the
backbone interface (``reset_classifier``, ``num_classes``); no training loop and no run folders.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..io.weights import WeightsError, load_state_dict_file
from ._base import Backbone

__all__ = [
    "frozen_base",
    "head_parameter_names",
    "load_backbone_weights",
    "param_groups",
]


def load_backbone_weights(backbone: nn.Module, source: str | os.PathLike[str]) -> list[str]:
    """Load a trained classifier's weights into a backbone built without its classifier.

    How the localize, detect and segment tasks start from a classifier (as FCN starts from
    ImageNet classifiers, Long et al.): every backbone tensor must be in the file with the same
    shape; the file's classifier tensors are left out.

    Args:
        backbone: the backbone (e.g. ``Segmenter.backbone``).
        source: a ``.safetensors`` / ``.pth`` state dict, or a classification run folder (its
            ``best.safetensors``).

    Returns:
        The names in the file that the backbone does not use (the classifier's).

    Raises:
        FileNotFoundError: no such file or run folder.
        WeightsError: missing backbone tensors, shape mismatches, or tensors that are neither
            the backbone's nor its classifier's, listed by name.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "best.safetensors"
    state = load_state_dict_file(path)
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs backbone {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or mismatched:
        problems = [f"missing {missing[:6]}"] if missing else []
        problems += [f"shape mismatches {mismatched[:6]}"] if mismatched else []
        raise WeightsError(
            f"{source} does not fit the backbone {type(backbone).__name__}: "
            + "; ".join(problems)
            + " (was it trained with the same --model and options?)"
        )
    extra = sorted(k for k in state if k not in own)
    if extra and isinstance(backbone, Backbone):
        # Only the classifier may be left over: other extra tensors mean a larger model of the
        # same family (e.g. depth 2 into depth 1), whose tensors would load where they do not belong.
        probe = copy.deepcopy(backbone)
        probe.reset_classifier(1)
        foreign = [k for k in extra if k not in probe.state_dict()]
        if foreign:
            raise WeightsError(
                f"{source} holds tensors the backbone {type(backbone).__name__} does not have: "
                f"{foreign[:6]} (was it trained with the same --model and options?)"
            )
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)
    return extra


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names (as in ``state_dict()``) of the tensors that ``reset_classifier`` creates: the head.

    Found on a copy, so ``model`` and the global random state are left untouched.

    Raises:
        TypeError: ``model`` does not implement the backbone interface.
        ValueError: the model has no classifier (``num_classes == 0``).
    """
    if not hasattr(model, "reset_classifier") or not hasattr(model, "num_classes"):
        raise TypeError(
            f"{type(model).__name__} has no reset_classifier(); pass head=[module names] to say "
            "which modules form the new head"
        )
    probe = copy.deepcopy(model)
    before = {k: id(v) for k, v in probe.state_dict(keep_vars=True).items()}
    with torch.random.fork_rng(devices=[]):
        probe.reset_classifier(probe.num_classes)
    names = [k for k, v in probe.state_dict(keep_vars=True).items() if before.get(k) != id(v)]
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no classifier (num_classes={model.num_classes}); "
            "call model.reset_classifier(number_of_classes) first"
        )
    return names


def _resolve_head(model: nn.Module, head: Sequence[str] | None) -> list[str]:
    """Parameter names trained in the head phase: ``head`` module prefixes, or the classifier."""
    params = [name for name, _ in model.named_parameters()]
    if head is None:
        own = set(head_parameter_names(model))
        return [n for n in params if n in own]
    chosen = [n for n in params if any(_under(n, prefix) for prefix in head)]
    unknown = [p for p in head if not any(_under(n, p) for n in params)]
    if unknown:
        raise ValueError(f"head modules {unknown} hold no parameters; top-level modules: {_top_level(model)}")
    return chosen


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _top_level(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_children()]


def _set_bn_eval(module: nn.Module, _args: object) -> None:
    # A forward pre-hook, because Trainer.fit calls model.train() at the start of every epoch.
    module.training = False


@contextlib.contextmanager
def frozen_base(model: nn.Module, trainable: Iterable[str], bn_eval: bool = True) -> Iterator[list[str]]:
    """Freeze every parameter of ``model`` except ``trainable`` (names from ``named_parameters``).

    While the context is open, batch-norm layers outside the trainable modules run in eval mode
    even when the model is in training mode (Keras' frozen BatchNormalization), so their
    running statistics stay as pretrained. ``requires_grad`` flags are restored on exit.

    Yields:
        The names of the frozen parameters.

    Raises:
        ValueError: a name in ``trainable`` that is not a parameter of ``model``.
    """
    keep = set(trainable)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    unknown = sorted(keep - set(flags))
    if unknown:
        raise ValueError(f"{unknown} are not parameters of {type(model).__name__}")
    frozen = [name for name in flags if name not in keep]
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    try:
        with _base_bn_in_eval(model, keep) if bn_eval else contextlib.nullcontext():
            yield frozen
    finally:
        for name, flag in flags.items():
            params[name].requires_grad_(flag)


@contextlib.contextmanager
def _base_bn_in_eval(model: nn.Module, trainable: Iterable[str]) -> Iterator[None]:
    """Batch-norm layers outside the modules owning ``trainable`` parameters run in eval mode."""
    owners = {name.rpartition(".")[0] for name in trainable}
    held = [
        module
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm) and not any(_under(name, owner) for owner in owners if owner)
    ]
    handles = [module.register_forward_pre_hook(_set_bn_eval) for module in held]
    try:
        yield
    finally:
        for handle, module in zip(handles, held):
            handle.remove()
            module.training = model.training


def param_groups(
    model: nn.Module, lr: float, group_lrs: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """Parameters grouped by learning rate, for any torch optimizer.

    Args:
        model: the model whose trainable parameters are grouped.
        lr: rate of every parameter no prefix matches.
        group_lrs: module-name prefix (``"features"``, ``"head.classifier"``, ``"layer4"``) ->
            learning rate; the longest matching prefix wins.

    Returns:
        ``[{"name": prefix, "params": [...], "lr": rate}, ...]`` (the rest last, named ``"*"``).

    Raises:
        ValueError: a prefix that matches no parameter, or a negative rate.
    """
    group_lrs = dict(group_lrs or {})
    for prefix, rate in group_lrs.items():
        if not isinstance(rate, int | float) or rate < 0:
            raise ValueError(f"learning rate of group {prefix!r} must be a number >= 0, got {rate!r}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    by_prefix: dict[str, list[nn.Parameter]] = {prefix: [] for prefix in group_lrs}
    rest: list[nn.Parameter] = []
    longest_first = sorted(group_lrs, key=len, reverse=True)
    for name, param in named:
        match = next((p for p in longest_first if _under(name, p)), None)
        (by_prefix[match] if match is not None else rest).append(param)
    empty = [prefix for prefix, params in by_prefix.items() if not params]
    if empty:
        raise ValueError(
            f"learning-rate groups {empty} match no trainable parameter; "
            f"top-level modules: {_top_level(model)}"
        )
    groups = [{"name": p, "params": by_prefix[p], "lr": float(group_lrs[p])} for p in group_lrs]
    if rest:
        groups.append({"name": "*", "params": rest, "lr": float(lr)})
    return groups
