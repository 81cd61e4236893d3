"""The model registry: one strict name -> builder table."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

_MODELS: dict[str, ModelEntry] = {}


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model name.

    Attributes:
        name: registered name.
        builder: keyword-only function returning the model.
        input_size: default input (C, H, W).
        description: one line, with the paper it follows.
        small_input: whether the builder takes ``small_input=True`` for 28×28 images.
    """

    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    description: str
    small_input: bool


def register_model(
    *, input_size: tuple[int, int, int], description: str, name: str | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a builder under its function name (or ``name``).

    Raises:
        ValueError: if the name is already registered.
    """

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered (by {_MODELS[key].builder.__module__})")
        params = inspect.signature(builder).parameters
        _MODELS[key] = ModelEntry(key, builder, input_size, description, "small_input" in params)
        return builder

    return decorate


def register_variant(
    name: str,
    build: Callable[..., nn.Module],
    *,
    input_size: tuple[int, int, int],
    description: str,
    doc: str,
    small_input: bool = True,
) -> Callable[..., nn.Module]:
    """Registers ``name`` as one variant of a model family and returns its builder.

    The builder is keyword-only, ``builder(*, num_classes=1000, in_chans=3, small_input=False)``,
    and calls ``build(name, num_classes, in_chans, small_input)``; with ``small_input=False`` the
    family has no 28×28 option: ``builder(*, num_classes=1000, in_chans=3)`` calls
    ``build(name, num_classes, in_chans)``. A family (ResNet, VGG, EfficientNet-Lite) keeps its
    variants in a config table and one class, with one line per public builder.
    """
    if small_input:

        def builder(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False) -> nn.Module:
            return build(name, num_classes, in_chans, small_input)

    else:

        def builder(*, num_classes: int = 1000, in_chans: int = 3) -> nn.Module:  # type: ignore[misc]
            return build(name, num_classes, in_chans)

    builder.__name__ = builder.__qualname__ = name
    builder.__module__ = build.__module__
    builder.__doc__ = doc
    return register_model(input_size=input_size, description=description)(builder)


def register_family(
    build: Callable[..., nn.Module],
    variants: dict[str, tuple[str, str]],
    *,
    input_size: tuple[int, int, int],
) -> tuple[Callable[..., nn.Module], ...]:
    """Registers every variant of ``variants`` (name: (description, docstring)) with
    :func:`register_variant`; returns their builders in the table's order."""
    return tuple(
        register_variant(name, build, input_size=input_size, description=description, doc=doc)
        for name, (description, doc) in variants.items()
    )


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell wildcard like ``'resnet*'``."""
    names = sorted(_MODELS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def model_entry(name: str) -> ModelEntry:
    """Registry entry for ``name``.

    Raises:
        ValueError: for an unknown name, listing close matches.
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see `cnnkit models` for all {len(_MODELS)} names)")
    return _MODELS[name]


def check_model_options(name: str, options: dict[str, Any]) -> None:
    """Raises ValueError naming any option that model ``name``'s builder does not take."""
    params = inspect.signature(model_entry(name).builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in options if k not in params]
    if unknown:
        valid = sorted(k for k in params if k not in ("num_classes", "in_chans", "weights"))
        raise ValueError(f"{name} does not take {', '.join(map(repr, unknown))}; its options are {valid}")


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    weights: str | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: a name from ``list_models()``.
        num_classes: classifier outputs; None keeps the model's own default (1000 for ImageNet
            architectures, 10 for the course's Fashion-MNIST models).
        in_chans: input channels; None keeps the model's default.
        weights: pretrained weights: a torchvision weights name such as ``"IMAGENET1K_V1"``,
            weights an installed package ships (``"IMAGENET1K"`` for efficientnet_lite0), a
            local ``.safetensors`` / ``.pth`` state dict, a Keras 3 ``.keras`` /
            ``.weights.h5`` file (course CNNs), or a cnnkit run folder.
        **kwargs: options of that model's builder (e.g. ``small_input=True``).

    Raises:
        ValueError: unknown name (with close matches) or an option the builder does not take.
    """
    entry = model_entry(name)
    check_model_options(name, kwargs)
    params = inspect.signature(entry.builder).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    for key in ("num_classes", "in_chans"):
        if key in kwargs and key not in params and not accepts_any:
            raise ValueError(f"{name} has a fixed {key}; do not pass it")
    model = entry.builder(**kwargs)
    if weights is not None:
        from ._weights import load_pretrained

        load_pretrained(model, name, weights)
    return model
