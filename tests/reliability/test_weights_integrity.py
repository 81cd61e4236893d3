"""F1 and F15: every weights file cnnkit writes carries a SHA-256 of its tensors, checked on load;
a refused pickle names its forbidden global and never PyTorch's advice to load it unsafely."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct

import pytest
import torch
from safetensors.torch import save_file

from cnnkit.engine.checkpoint import CheckpointError, load_checkpoint
from cnnkit.io.weights import SHA256_KEY, WeightsError, read_weights, save_weights

from .conftest import run_cli, seal


def _header(path) -> tuple[int, dict]:
    """The safetensors header, parsed here by hand (8-byte little-endian length, then JSON)."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return 8 + length, json.loads(data[8 : 8 + length])


def _flip_bit(path, key: str) -> None:
    start, header = _header(path)
    begin, _ = header[key]["data_offsets"]
    data = bytearray(path.read_bytes())
    data[start + begin] ^= 0x01  # the lowest bit of the first byte of that tensor
    path.write_bytes(bytes(data))


def _reference_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def test_written_weights_carry_the_sha256_of_their_tensors(tmp_path):
    state = {"conv.weight": torch.randn(4, 1, 3, 3), "head.bias": torch.arange(3.0)}
    save_weights(state, tmp_path / "w.safetensors", metadata={"model": "x"})
    _, header = _header(tmp_path / "w.safetensors")
    assert header["__metadata__"][SHA256_KEY] == _reference_digest(state)
    assert header["__metadata__"]["model"] == "x"
    loaded, metadata = read_weights(tmp_path / "w.safetensors")
    assert torch.equal(loaded["head.bias"], state["head.bias"]) and metadata["model"] == "x"


def test_one_flipped_bit_in_best_safetensors_is_refused_by_evaluate(reference_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    _, header = _header(run / "best.safetensors")
    bias = [k for k in header if k != "__metadata__" and k.endswith("bias")][-1]
    _flip_bit(run / "best.safetensors", bias)

    with pytest.raises(WeightsError, match="damaged"):
        read_weights(run / "best.safetensors")
    result = run_cli("evaluate", str(run))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cnnkit: error: {run / 'best.safetensors'} is damaged" in result.stderr
    assert not (run / "evaluation").exists() or not any((run / "evaluation").iterdir())


def test_foreign_safetensors_load_as_before_without_a_hash(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    save_file(state, tmp_path / "foreign.safetensors")
    _flip_bit(tmp_path / "foreign.safetensors", "w")  # nothing to check it against: loads
    loaded, metadata = read_weights(tmp_path / "foreign.safetensors")
    assert SHA256_KEY not in metadata and not torch.equal(loaded["w"], state["w"])


class _Runs:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_refused_pickle_names_the_forbidden_global_not_the_unsafe_advice(tmp_path):
    torch.save({"w": torch.zeros(2), "x": _Runs()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError) as info:
        read_weights(tmp_path / "evil.pth")
    message = str(info.value)
    assert f"{os.system.__module__}.system" in message and "GLOBAL" in message
    assert "weights_only" not in message and str(tmp_path / "evil.pth") in message

    buffer = io.BytesIO()
    torch.save({"format_version": 1, "x": _Runs()}, buffer)
    (tmp_path / "evil.ckpt").write_bytes(seal(buffer.getvalue()))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "evil.ckpt")
    assert f"{os.system.__module__}.system" in str(info.value) and "weights_only" not in str(info.value)
