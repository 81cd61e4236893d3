"""Loading published or saved weights into a registered model, with what they know.

``create_model(name, weights=W)`` ends here. ``W`` is one of:

- a torchvision weights name (``"IMAGENET1K_V2"``, ``"DEFAULT"`` or
  ``"ResNet50_Weights.IMAGENET1K_V2"``): resolved to torchvision's enum, read from
  torchvision's cache (``$TORCH_HOME/hub/checkpoints``) or downloaded there when allowed, and
  checked against the SHA-256 prefix in its file name;
- a local ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` state dict (weights only; pickled
  modules and TorchScript are refused);
- a cnnkit run folder (its ``best.safetensors``, with the class names of ``config.json``).

What the weights know travels with the model: ``model.class_names`` (list of str, or None)
and ``model.pretrained_info`` (:class:`PretrainedInfo`: source, input size, normalisation,
crop fraction...), from which ``cnnkit.data.preprocess.Preprocess.from_config`` builds the
matching preprocessing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io.keras_h5 import KERAS_SUFFIXES
from ..io.weights import (
    WEIGHTS_SUFFIXES,
    WeightsError,
    fetch_torchvision_weights,
    is_torchvision_weights_name,
    load_strict,
    read_weights,
    torchvision_weights,
    torchvision_weights_info,
)
from ..ranked import Prediction
from ._packaged import PackagedWeights, find_packaged_weights, read_packaged_weights

__all__ = [
    "RUN_CONFIG",
    "RUN_WEIGHTS",
    "PretrainedInfo",
    "Prediction",
    "decode_predictions",
    "imagenet_class_names",
    "load_pretrained",
]

RUN_CONFIG = "config.json"
RUN_WEIGHTS = "best.safetensors"


@dataclass(frozen=True)
class PretrainedInfo:
    """What a set of weights says about itself.

    Attributes:
        source: what was loaded (file path, run folder, or torchvision enum name).
        class_names: one name per output, or None when the weights do not say.
        input_size: [C, H, W] the weights were trained at, if known.
        normalize: ``{"mean": [...], "std": [...]}`` on the [0, 1] scale, or
            ``{"preset": name}`` (a cnnkit run without mean/std: ``{"preset": "unit"}``,
            pixels / 255), or None when the weights do not say.
        crop_fraction: central crop used at evaluation (torchvision: e.g. 224 / 232).
        interpolation: resize filter used at evaluation.
        details: anything else (torchvision URL, file, published metrics; run metrics).
    """

    source: str
    class_names: list[str] | None = None
    input_size: list[int] | None = None
    normalize: dict[str, Any] | None = None
    crop_fraction: float | None = None
    interpolation: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def preprocess_config(self) -> dict[str, Any]:
        """The fields ``Preprocess.from_config`` reads (input_shape, normalize, crop...)."""
        out: dict[str, Any] = {}
        if self.normalize is not None:
            out["normalize"] = self.normalize
        if self.input_size is not None:
            out["input_shape"] = list(self.input_size)
        if self.crop_fraction is not None:
            out["crop_fraction"] = self.crop_fraction
        if self.interpolation is not None:
            out["interpolation"] = self.interpolation
        out.update(self.details.get("preprocess") or {})
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_pretrained(
    model: nn.Module, name: str, weights: str | Path, *, download: bool | None = None
) -> PretrainedInfo:
    """Load ``weights`` into ``model`` in place and attach what they say about themselves.

    Args:
        model: the freshly built model.
        name: its registry name (to find torchvision's weights for it).
        weights: weights an installed package ships (``"IMAGENET1K"`` / ``"DEFAULT"`` for
            efficientnet_lite0), a torchvision weights name (``"imagenet"``, as Keras says it, is
            ``"DEFAULT"``), a local state-dict file, a Keras 3
            ``.keras`` / ``.weights.h5`` file (course CNNs), or a cnnkit run folder.
        download: for torchvision weights that are not cached: None downloads unless
            ``$CNNKIT_OFFLINE`` is set, False never does.

    Returns:
        The PretrainedInfo, also set as ``model.pretrained_info`` (and its class names as
        ``model.class_names``).

    Raises:
        FileNotFoundError: a weights file or run folder that does not exist.
        WeightsError: unknown torchvision name, weights not cached while offline (naming the
            file and folder), hash mismatch, unsafe or malformed file, keys or shapes that do
            not fit the model (listed by name), or a run folder of another model.
    """
    text = str(weights)
    path = Path(weights)
    if isinstance(weights, str) and text.lower() == "imagenet" and not path.exists():
        text = weights = "DEFAULT"  # Keras' weights="imagenet": every DEFAULT here is ImageNet's
    packaged = find_packaged_weights(name, text) if isinstance(weights, str) else None
    if packaged is not None and not path.exists():
        state, info = _packaged(packaged, model)
    elif isinstance(weights, str) and is_torchvision_weights_name(text) and not path.exists():
        state, info = _torchvision(name, text, download)
    elif path.is_dir():
        state, info = _run_folder(name, path)
    elif path.is_file() and path.suffix in KERAS_SUFFIXES:
        from .keras_import import keras_state_dict

        state, info = keras_state_dict(model, path), PretrainedInfo(source=str(path))
    elif path.exists():
        state, metadata = read_weights(path)
        info = _info_from_metadata(str(path), metadata, name)
    elif path.suffix in WEIGHTS_SUFFIXES or len(path.parts) > 1:
        raise FileNotFoundError(f"weights file {path} does not exist")
    else:
        raise FileNotFoundError(
            f"weights {text!r} is neither an existing file or run folder nor a torchvision "
            "weights name like 'IMAGENET1K_V1', 'DEFAULT' or 'imagenet'"
        )
    try:
        load_strict(model, state, source=info.source)
    except WeightsError as exc:
        build = info.details.get("build")
        hint = f". The run built it as {build}" if build else _classifier_hint(model, state)
        raise WeightsError(f"{exc}{hint}") from None
    if info.class_names is not None:
        outputs = _num_outputs(model)
        if outputs is not None and outputs != len(info.class_names):
            raise WeightsError(
                f"{info.source} names {len(info.class_names)} classes but the model has {outputs} outputs"
            )
    model.class_names = info.class_names  # type: ignore[assignment]
    model.pretrained_info = info  # type: ignore[assignment]
    return info


def _torchvision(
    name: str, weights_name: str, download: bool | None
) -> tuple[dict[str, torch.Tensor], PretrainedInfo]:
    tv_name = name[: -len("_tv")] if name.endswith("_tv") else name
    enum_value = torchvision_weights(tv_name, weights_name)
    meta = torchvision_weights_info(enum_value)
    file = fetch_torchvision_weights(enum_value, download=download)
    state, _ = read_weights(file)
    info = PretrainedInfo(
        source=meta["name"],
        class_names=meta["class_names"],
        input_size=meta["input_size"],
        normalize=meta["normalize"],
        crop_fraction=meta["crop_fraction"],
        interpolation=meta["interpolation"],
        details={k: meta[k] for k in ("url", "file", "sha256_prefix", "num_params", "metrics")},
    )
    return state, info


def _packaged(spec: PackagedWeights, model: nn.Module) -> tuple[dict[str, torch.Tensor], PretrainedInfo]:
    state, file = read_packaged_weights(spec, model)
    info = PretrainedInfo(
        source=f"{spec.model}.{spec.name}",
        class_names=imagenet_class_names(),
        input_size=list(spec.input_size),
        normalize={"mean": list(spec.mean), "std": list(spec.std)},
        crop_fraction=spec.crop_fraction,
        interpolation=spec.interpolation,
        details={"file": str(file), "sha256_prefix": spec.sha256_prefix, "package": spec.distribution,
                 "num_params": spec.num_params, "origin": spec.origin},
    )  # fmt: skip
    return state, info


def _run_folder(name: str, folder: Path) -> tuple[dict[str, torch.Tensor], PretrainedInfo]:
    weights_file = folder / RUN_WEIGHTS
    config_file = folder / RUN_CONFIG
    if not weights_file.is_file():
        raise FileNotFoundError(f"{folder} is not a cnnkit run folder with weights: {RUN_WEIGHTS} is missing")
    record: dict[str, Any] = {}
    if config_file.is_file():
        try:
            record = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WeightsError(f"{config_file} is not valid JSON: {exc}") from None
        if not isinstance(record, dict):
            raise WeightsError(f"{config_file} must hold a JSON object")
    run = record.get("run") if isinstance(record.get("run"), dict) else record
    trained = run.get("model") if isinstance(run, dict) else None
    if trained is not None and trained != name:
        raise WeightsError(
            f"{folder} holds weights of {trained!r}, not {name!r}; use create_model({trained!r}, weights=...)"
        )
    state, metadata = read_weights(weights_file)
    info = _info_from_metadata(str(folder), metadata, name)
    names = record.get("class_names", info.class_names)
    details = dict(info.details)
    if isinstance(run, dict) and trained is not None:
        args = [repr(trained)]
        classes = record.get("num_classes") or len(record.get("class_names") or []) or None
        if classes is not None:
            args.append(f"num_classes={classes}")
        if record.get("input_shape"):
            args.append(f"in_chans={record['input_shape'][0]}")
        args += [f"{k}={v!r}" for k, v in (run.get("model_kwargs") or {}).items()]
        details["build"] = f"create_model({', '.join(args)})"
    if record.get("preprocess"):
        details["preprocess"] = record["preprocess"]
    metrics_file = folder / "metrics.json"
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            details["test_accuracy"] = metrics.get("test_accuracy")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            pass  # metrics are shown when present; the weights load without them
    info = PretrainedInfo(
        source=str(folder),
        class_names=_check_names(names, config_file),
        input_size=record.get("input_shape", info.input_size),
        normalize=_run_normalize(record, info.normalize, config_file),
        crop_fraction=info.crop_fraction,
        interpolation=info.interpolation,
        details=details,
    )
    return state, info


def _run_normalize(record: dict[str, Any], default: Any, source: Path) -> dict[str, Any] | None:
    """The trainer scales pixels to [0, 1], then applies ``normalize`` (mean, std) if set."""
    if "normalize" not in record:
        return default
    value = record["normalize"]
    if value is None:
        return {"preset": "unit"}
    if isinstance(value, dict) and ("preset" in value or {"mean", "std"} <= set(value)):
        return value
    if isinstance(value, list | tuple) and len(value) == 2:
        return {"mean": list(value[0]), "std": list(value[1])}
    raise WeightsError(f"{source}: normalize must be null, {{'mean', 'std'}} or [mean, std], got {value!r}")


def _json_field(metadata: dict[str, str], key: str, source: str) -> Any:
    if key not in metadata:
        return None
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError:
        raise WeightsError(f"{source}: metadata {key!r} is not valid JSON") from None


def _info_from_metadata(source: str, metadata: dict[str, str], name: str) -> PretrainedInfo:
    """Read cnnkit's metadata keys: model, class_names, input_shape, normalize, preprocess."""
    trained = metadata.get("model")
    if trained is not None and trained != name:
        raise WeightsError(f"{source} holds weights of {trained!r}, not {name!r}")
    details: dict[str, Any] = {}
    preprocess = _json_field(metadata, "preprocess", source)
    if preprocess:
        details["preprocess"] = preprocess
    return PretrainedInfo(
        source=source,
        class_names=_check_names(_json_field(metadata, "class_names", source), source),
        input_size=_json_field(metadata, "input_shape", source),
        normalize=_json_field(metadata, "normalize", source),
        details=details,
    )


def _check_names(names: Any, source: object) -> list[str] | None:
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise WeightsError(f"{source}: class_names must be a list of strings, got {names!r}")
    return names


def _num_outputs(model: nn.Module) -> int | None:
    classes = getattr(model, "num_classes", None)
    if isinstance(classes, int) and classes > 0:
        return classes
    return None


def _classifier_hint(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """When only the last layer (the classifier) differs, say how many classes the weights have."""
    own = model.state_dict()
    if not own or set(own) != set(state):
        return ""
    last = list(own)[-1].rpartition(".")[0]  # state dicts list the classifier last
    mismatched = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if not mismatched or not all(k.rpartition(".")[0] == last for k in mismatched):
        return ""
    outputs = state[mismatched[0]].shape[0] if state[mismatched[0]].dim() else None
    if outputs is None:
        return ""
    return (
        f". The weights have {outputs} classes: build the model with num_classes={outputs} "
        "(or load them, then reset_classifier(n) for transfer learning)"
    )


def decode_predictions(
    probs: torch.Tensor, top: int = 5, class_names: list[str] | None = None
) -> list[list[Prediction]]:
    """The ``top`` most likely classes of each image (like Keras ``decode_predictions``).

    Args:
        probs (Tensor[N, K]): class probabilities (softmax of the logits).
        top: how many classes per image; more than K gives K.
        class_names: K names; None names classes "class 0", "class 1", ...

    Returns:
        N lists of Prediction(rank, index, name, probability), most likely first.

    Raises:
        ValueError: probs not 2-D, ``top`` < 1, or a names list of the wrong length.
    """
    if not isinstance(probs, torch.Tensor) or probs.dim() != 2:
        shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise ValueError(f"probs must be a Tensor[N, K] of probabilities, got {shape}")
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be an int >= 1, got {top!r}")
    classes = probs.shape[1]
    if class_names is not None and len(class_names) != classes:
        raise ValueError(f"{len(class_names)} class names for {classes} outputs; give one per output")
    k = min(top, classes)
    values, indices = probs.detach().float().cpu().topk(k, dim=1)
    out = []
    for row_v, row_i in zip(values.tolist(), indices.tolist()):
        out.append(
            [
                Prediction(rank, i, class_names[i] if class_names else f"class {i}", p)
                for rank, (p, i) in enumerate(zip(row_v, row_i), start=1)
            ]
        )
    return out


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, in torchvision's (= Keras's) output order."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
