"""A last.ckpt whose unpickling would run code (here: write a marker file) is refused, by
`cnnkit train --resume` and by load_checkpoint, and the code never runs."""

from __future__ import annotations

import io
import os
import shutil

import pytest
import torch

from cnnkit.engine.checkpoint import CheckpointError, load_checkpoint

from .conftest import run_cli, seal


class _WritesMarker:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _malicious(marker, legacy: bool = False) -> bytes:
    """Looks like a cnnkit checkpoint, down to a valid file digest; only the pickle is hostile."""
    body = {"format_version": 1, "epoch": 1, "model": {"w": torch.zeros(3)}, "payload": _WritesMarker(marker)}
    buffer = io.BytesIO()
    torch.save(body, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue() if legacy else seal(buffer.getvalue())


def test_the_payload_is_live_when_loaded_unsafely(tmp_path):
    # Proves the test files are really hostile: torch.load without weights_only runs the code.
    marker = tmp_path / "marker"
    (tmp_path / "evil.ckpt").write_bytes(_malicious(marker))
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_load_checkpoint_refuses_code_in_the_pickle(tmp_path, legacy):
    marker = tmp_path / "marker"
    (tmp_path / "evil.ckpt").write_bytes(_malicious(marker, legacy))
    with pytest.raises(CheckpointError, match="refused|integrity record"):
        load_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_cli_resume_refuses_a_malicious_last_ckpt_before_touching_the_run(reference_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(reference_run / "config.json", run / "config.json")
    marker = tmp_path / "marker"
    (run / "last.ckpt").write_bytes(_malicious(marker))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())

    result = run_cli("train", "--resume", str(run), "--no-progress")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("cnnkit: error")]
    assert len(errors) == 1, result.stderr
    # The real reason (the forbidden global) is kept; PyTorch's advice to load unsafely is not.
    assert errors[0].startswith(
        f"cnnkit: error: refused {run / 'last.ckpt'}: it is damaged or holds objects other than tensors and "
        "plain values ("
    ), result.stderr
    assert "GLOBAL" in errors[0] and "exec" in errors[0], result.stderr
    assert errors[0].endswith(
        "; loading those could run code); only checkpoints written by cnnkit can be used"
    ), result.stderr
    assert "Traceback" not in result.stderr and "weights_only" not in result.stderr
    assert not marker.exists() and not os.path.exists(run / "marker")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before  # nothing rewritten
