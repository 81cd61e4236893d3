"""Resumable training checkpoints: tensors and plain values only, so they load with weights_only=True."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CnnkitError
from ..io.atomic import atomic_write
from ..io.weights import refusal_reason

FORMAT_VERSION = 1
# A SHA-256 of every byte before it, kept as the zip archive comment at the very end of the file:
# a damaged byte anywhere, even in zip metadata or pickle details that torch.load would read past
# without complaint, fails verification. The file stays a zip that torch.load reads as it is.
FILE_DIGEST_PREFIX = b"cnnkit-sha256:"
_DIGEST_RECORD_BYTES = len(FILE_DIGEST_PREFIX) + 64
_ZIP_END = b"PK\x05\x06"  # end-of-central-directory record: 22 bytes, then the comment
_READ_CHUNK = 1 << 20


class CheckpointError(CnnkitError, ValueError):
    """A checkpoint that is corrupt, tampered with, or of an unknown format."""


def tensor_checksum(state: Any) -> str:
    """SHA-256 over every tensor (key order, dtype, shape, bytes) and value in a nested state."""
    digest = hashlib.sha256()

    def walk(obj: Any, key: str) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                walk(obj[k], f"{key}/{k}")
        elif isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                walk(v, f"{key}/{i}")
        else:
            digest.update(f"{key}={obj!r}|".encode())

    walk(state, "")
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) generator states as tensors / JSON."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": json.dumps(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
            "kind": kind,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically, with format version, versions, a content checksum and a
    SHA-256 of the whole file."""
    from .. import __version__

    body = {
        "format_version": FORMAT_VERSION,
        "cnnkit_version": __version__,
        "torch_version": str(torch.__version__),  # TorchVersion would need an allow-list
        **payload,
    }
    body["checksum"] = tensor_checksum({k: v for k, v in body.items() if k != "checksum"})
    buffer = io.BytesIO()
    torch.save(body, buffer)
    data = buffer.getbuffer()
    if bytes(data[-22:-18]) != _ZIP_END or bytes(data[-2:]) != b"\0\0":
        raise RuntimeError("torch.save no longer ends its zip with a comment-less end record")
    head, comment_length = data[:-2], _DIGEST_RECORD_BYTES.to_bytes(2, "little")
    digest = hashlib.sha256(head)
    digest.update(comment_length)
    with atomic_write(path, "wb") as f:
        f.write(head)
        f.write(comment_length)
        f.write(FILE_DIGEST_PREFIX + digest.hexdigest().encode())


def _verify_file_digest(path: Path) -> None:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _DIGEST_RECORD_BYTES + 22:
            raise CheckpointError(f"{path} is not a cnnkit checkpoint: only {size} bytes")
        f.seek(size - _DIGEST_RECORD_BYTES)
        record = f.read()
        if not record.startswith(FILE_DIGEST_PREFIX):
            raise CheckpointError(f"{path} is damaged or not a cnnkit checkpoint (no integrity record)")
        f.seek(0)
        digest = hashlib.sha256()
        left = size - _DIGEST_RECORD_BYTES
        while left > 0:
            chunk = f.read(min(_READ_CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    if digest.hexdigest().encode() != record[len(FILE_DIGEST_PREFIX) :]:
        raise CheckpointError(f"{path} is damaged: its bytes differ from the SHA-256 recorded when written")


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint written by ``save_checkpoint``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: file digest mismatch, not loadable with weights_only=True, unknown
            format, or content checksum mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    _verify_file_digest(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            body = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message offers weights_only=False, which would run the file's code: don't echo it.
        raise CheckpointError(
            f"refused {path}: it is damaged or holds objects other than tensors and plain values "
            f"({refusal_reason(exc)}; loading those could run code); only checkpoints written by "
            "cnnkit can be used"
        ) from None
    except Exception as exc:  # any other loading failure means: refuse the file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path} is not a cnnkit checkpoint or is damaged: {first}") from None
    if not isinstance(body, dict) or body.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unknown checkpoint format (expected format_version {FORMAT_VERSION})")
    expected = body.get("checksum")
    actual = tensor_checksum({k: v for k, v in body.items() if k != "checksum"})
    if expected != actual:
        raise CheckpointError(f"{path}: checksum mismatch (file damaged or edited); resume from another run")
    return body
