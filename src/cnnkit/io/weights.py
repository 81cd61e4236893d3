"""The one loader for weights: safetensors first, torch.load only with weights_only=True.

What is accepted:

- ``.safetensors`` files (parsed by the safetensors library, which checks that the header fits
  in the file and that tensor offsets neither overlap nor run past the end);
- ``torch.save`` archives of a *state dict* (names -> tensors, possibly inside a checkpoint's
  ``"state_dict"`` / ``"model"`` entry), read with ``weights_only=True``.

What is refused, with a WeightsError and never a fallback to unsafe loading: pickled modules,
TorchScript archives, pickles that name any other Python object (they could run code), and
anything that is not a flat mapping of names to tensors.

torchvision's published weights are resolved by name ("IMAGENET1K_V2") to torchvision's enum
and metadata, looked for in torchvision's cache folder (``$TORCH_HOME/hub/checkpoints``),
downloaded there when allowed, and checked against the SHA-256 prefix in their file name
every time they are loaded, not only after a download.

Every safetensors file cnnkit writes carries ``cnnkit_sha256``, a SHA-256 of its tensors (names,
dtypes, shapes and bytes), in its header metadata; it is checked on every load, so one flipped
bit is refused naming the file. Files written elsewhere have no such entry and load as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from .atomic import atomic_write_bytes

__all__ = [
    "OFFLINE_ENV",
    "SHA256_KEY",
    "WEIGHTS_SUFFIXES",
    "WeightsError",
    "tensors_sha256",
    "check_sha256_prefix",
    "downloads_allowed",
    "fetch_torchvision_weights",
    "is_torchvision_weights_name",
    "load_state_dict_file",
    "load_strict",
    "metadata_json",
    "read_weights",
    "save_weights",
    "torchvision_checkpoint_path",
    "torchvision_weights",
    "torchvision_weights_info",
]

WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
# Set to 1 to forbid downloads (torchvision weights must then be in the cache already).
OFFLINE_ENV = "CNNKIT_OFFLINE"
# Metadata key of the tensors' SHA-256 in every safetensors file cnnkit writes.
SHA256_KEY = "cnnkit_sha256"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")
# "IMAGENET1K_V2", "DEFAULT" or "ResNet50_Weights.IMAGENET1K_V2"
_WEIGHTS_NAME = re.compile(r"^(?:[A-Za-z0-9]+_Weights\.)?[A-Z][A-Z0-9_]*$")
_TORCH_LOAD_ERRORS = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    OverflowError,
    MemoryError,
    NotImplementedError,
    ImportError,
    zipfile.BadZipFile,
    UnicodeDecodeError,
    SafetensorError,
    OSError,
)


class WeightsError(ValueError):
    """A weights file that cannot be used: unreadable, unsafe, or not matching the model."""


def save_weights(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a state dict as safetensors, atomically (the old file survives a failed write).

    Args:
        state_dict: names -> tensors (any device); tensors that share memory are copied apart.
        path: destination file.
        metadata: str -> str pairs stored in the header (see :func:`metadata_json`).
    """
    # clone(): safetensors refuses tensors that share storage (tied weights, views).
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state_dict.items()}
    metadata = {**(metadata or {}), SHA256_KEY: tensors_sha256(tensors)}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _sniff(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"  # 8-byte little-endian header length, then JSON
    if head.startswith(b"PK\x03\x04"):
        return "zip"  # torch.save's default format (and TorchScript archives)
    if head[:1] == b"\x80":
        return "pickle"  # torch.save's legacy format (or a bare pickle)
    return "unknown"


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a state dict and its metadata (safetensors header metadata; empty for .pth).

    The format is recognised from the content, not the extension.

    Returns:
        (state dict on the CPU, metadata).

    Raises:
        FileNotFoundError: the file does not exist.
        WeightsError: unreadable, malformed, unsafe, or not a flat name -> tensor mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        kind = _sniff(path)
    except OSError as exc:
        raise WeightsError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if kind == "safetensors" or (kind == "unknown" and path.suffix == ".safetensors"):
        return _read_safetensors(path)
    if kind == "unknown":
        raise WeightsError(
            f"{path} is neither a safetensors file nor a torch.save archive "
            "(save weights with cnnkit's save_weights or torch.save(model.state_dict(), path))"
        )
    return _read_torch(path), {}


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    errors = (SafetensorError, OSError, ValueError, TypeError, RuntimeError, OverflowError)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        state = load_file(str(path))
    except errors as exc:
        raise WeightsError(f"{path} is not a valid safetensors file: {exc}") from None
    expected = metadata.get(SHA256_KEY)
    if expected is not None and tensors_sha256(state) != expected:
        raise WeightsError(
            f"{path} is damaged: its tensors differ from the SHA-256 recorded when cnnkit wrote "
            "it; restore the file or train the run again"
        )
    return state, metadata


def refusal_reason(exc: BaseException) -> str:
    text = str(exc)
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|\n|$)", text)
    if match:
        return match.group(1).strip().rstrip(".")
    # PyTorch >= 2.6 puts the reason after its advice to load with weights_only=False (which
    # would run the file's code): keep the reason, never the advice.
    match = re.search(r"^(.*(?:GLOBAL|global).*)$", text, re.MULTILINE)
    if match and "weights_only" not in match.group(1):
        return match.group(1).strip().rstrip(".")
    if "TorchScript" in text:
        return "it is a TorchScript archive (a program, not a state dict)"
    lines = [line for line in text.strip().splitlines() if line.strip() and "weights_only" not in line]
    first = lines[0] if lines else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols and TorchScript dispatch; the error says it all.
            warnings.simplefilter("ignore")
            # A file object, not the name: torch.load picks loaders by file name (".safetensors"),
            # and the format was already decided from the content.
            with open(path, "rb") as handle:
                obj = torch.load(handle, map_location="cpu", weights_only=True)
    except _TORCH_LOAD_ERRORS as exc:
        raise WeightsError(
            f"{path} was refused: it is not a plain state dict ({refusal_reason(exc)}). cnnkit "
            "loads only names -> tensors and never unpickles code; re-save the weights with "
            "torch.save(model.state_dict(), path) or as .safetensors"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"{path} does not hold a state dict: entries {_short([repr(k) for k in bad])} "
            "are not name -> tensor"
        )
    state = dict(obj)
    # Weights saved from nn.DataParallel / DistributedDataParallel carry a "module." prefix.
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or (weights only) ``.pth`` / ``.pt`` / ``.bin``.

    Pickled modules, TorchScript archives and anything that needs code execution are refused;
    there is never a fallback to unsafe loading.

    Raises:
        FileNotFoundError: the file does not exist.
        WeightsError: unreadable, unsafe, or not a flat name -> tensor mapping.
    """
    return read_weights(path)[0]


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "weights") -> None:
    """Load ``state`` into ``model``, reporting missing / unexpected keys and shape mismatches.

    Raises:
        WeightsError: listing every key that does not fit, by name.
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
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:  # e.g. a complex tensor for a real parameter
        raise WeightsError(f"{source} does not fit {type(model).__name__}: {exc}") from None


def _short(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def is_torchvision_weights_name(text: str) -> bool:
    """True for "IMAGENET1K_V2", "DEFAULT" or "ResNet50_Weights.IMAGENET1K_V2" (not a path)."""
    return bool(_WEIGHTS_NAME.match(text))


def torchvision_weights(model_name: str, weights_name: str) -> Any:
    """Resolve e.g. ("resnet50", "IMAGENET1K_V2") to torchvision's weights enum member.

    ``weights_name`` may be a member name, ``"DEFAULT"``, or the full
    ``"ResNet50_Weights.IMAGENET1K_V2"``; nothing is downloaded.

    Raises:
        WeightsError: unknown model or weights name, listing the valid ones.
    """
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(model_name)
    except (ValueError, KeyError):
        raise WeightsError(f"torchvision publishes no weights for {model_name!r}") from None
    valid = [w.name for w in enum]
    prefix, _, key = weights_name.rpartition(".")
    if prefix and prefix != enum.__name__:
        raise WeightsError(
            f"{weights_name!r} are {prefix} weights, not {enum.__name__} ones for {model_name}; "
            f"valid: {valid}"
        )
    if key == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[key]
    except KeyError:
        raise WeightsError(
            f"unknown weights {weights_name!r} for {model_name}; valid: {valid + ['DEFAULT']}"
        ) from None


def torchvision_weights_info(weights: Any) -> dict[str, Any]:
    """Metadata of a torchvision weights enum member, as plain JSON-ready values.

    Returns:
        ``name`` (e.g. "ResNet50_Weights.IMAGENET1K_V2"), ``url``, ``file`` (its cache
        path), ``sha256_prefix``, ``class_names``, ``num_params``, ``input_size`` [C, H, W],
        ``crop_fraction`` (crop / resize size), ``interpolation``, ``normalize``
        {"mean", "std"} and ``metrics`` (published accuracy).
    """
    meta = weights.meta
    transforms = weights.transforms()
    crop = list(getattr(transforms, "crop_size", [224]))
    resize = list(getattr(transforms, "resize_size", crop))
    height = width = int(crop[0])
    if len(crop) == 2:
        height, width = int(crop[0]), int(crop[1])
    interpolation = getattr(getattr(transforms, "interpolation", None), "value", "bilinear")
    match = _HASH_IN_NAME.search(os.path.basename(weights.url))
    return {
        "name": f"{type(weights).__name__}.{weights.name}",
        "url": weights.url,
        "file": str(torchvision_checkpoint_path(weights)),
        "sha256_prefix": match.group(1) if match else None,
        "class_names": list(meta.get("categories") or []) or None,
        "num_params": meta.get("num_params"),
        "input_size": [3, height, width],
        "crop_fraction": min(1.0, float(crop[0]) / float(resize[0])) if resize else 1.0,
        "interpolation": str(interpolation),
        "normalize": {
            "mean": list(getattr(transforms, "mean", [0.485, 0.456, 0.406])),
            "std": list(getattr(transforms, "std", [0.229, 0.224, 0.225])),
        },
        "metrics": meta.get("_metrics"),
    }


def torchvision_checkpoint_path(weights: Any) -> Path:
    """Where torchvision keeps this weights file: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def check_sha256_prefix(path: str | os.PathLike[str], prefix: str) -> None:
    """Check that the file's SHA-256 starts with ``prefix`` (torchvision puts it in file names).

    Raises:
        WeightsError: the hash differs; the message says what to do.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    actual = digest.hexdigest()
    if not actual.startswith(prefix):
        raise WeightsError(
            f"{path} is not the published file: its SHA-256 starts with {actual[: len(prefix)]}, "
            f"expected {prefix} (damaged or replaced); delete it and download it again"
        )


def downloads_allowed() -> bool:
    """False when ``$CNNKIT_OFFLINE`` is set to 1 / true / yes."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("1", "true", "yes")


def fetch_torchvision_weights(weights: Any, download: bool | None = None) -> Path:
    """The verified local file of torchvision weights, downloading it if allowed and missing.

    Args:
        weights: a torchvision weights enum member (see :func:`torchvision_weights`).
        download: try to download a missing file; None means yes unless ``$CNNKIT_OFFLINE``.

    Returns:
        Path of the file in ``$TORCH_HOME/hub/checkpoints``, its SHA-256 prefix checked.

    Raises:
        WeightsError: not cached and not downloadable (the message names the exact file, URL
            and folder), or a file whose hash does not match.
    """
    target = torchvision_checkpoint_path(weights)
    match = _HASH_IN_NAME.search(target.name)
    prefix = match.group(1) if match else None
    name = f"{type(weights).__name__}.{weights.name}"
    if not target.is_file():
        allowed = downloads_allowed() if download is None else download
        where = (
            f"Download {weights.url} on a machine with internet and put it at {target} "
            f"(folder {target.parent}, which is $TORCH_HOME/hub/checkpoints; set TORCH_HOME to "
            "use another folder)"
        )
        if not allowed:
            raise WeightsError(
                f"{name} weights are not on this machine and downloads are off ({OFFLINE_ENV}=1 "
                f"or download=False). {where}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # torch.hub writes to a temp file, checks the hash prefix, then renames.
            torch.hub.download_url_to_file(weights.url, str(target), hash_prefix=prefix)
        except (OSError, RuntimeError, ValueError) as exc:
            raise WeightsError(f"{name} weights could not be downloaded ({exc}). {where}") from None
    if prefix:
        check_sha256_prefix(target, prefix)
    return target


def metadata_json(**fields: object) -> dict[str, str]:
    """safetensors metadata must be str -> str; store structured values as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
