"""run.sh's set-up: a failed PyTorch install falls back to the newest allowed versions only when
the pinned ones do not exist; any other failure stops with pip's message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A stand-in pip: it logs each call, fails the pinned torch install with the given message, and
# succeeds at everything else.
FAKE_PIP = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
  *"torch==9.9.9"*) echo "{message}" >&2; exit 1 ;;
esac
exit 0
"""


def _setup(tmp_path: Path, message: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    log = tmp_path / "pip.log"
    pip = venv / "bin" / "pip"
    pip.write_text(FAKE_PIP.format(log=log, message=message))
    pip.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "CNNKIT_VENV": str(venv),
        "CNNKIT_TORCH": "torch==9.9.9 torchvision==9.9.9",
    }
    proc = subprocess.run(
        # run.sh's definitions without its command dispatch, run from the checkout
        ["bash", "-c", "source <(sed -e '/^cmd=/,$d' -e 's|^here=.*|here=\"$PWD\"|' run.sh); setup_venv"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return proc, log.read_text().splitlines() if log.exists() else []


def test_a_full_disk_stops_with_pips_message_and_no_fallback(tmp_path):
    proc, calls = _setup(
        tmp_path, "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device"
    )
    assert proc.returncode == 1
    assert "No space left on device" in proc.stderr
    assert "failed (pip's message above); fix that and run ./run.sh again" in proc.stderr
    assert "not available here" not in proc.stderr
    assert not any("torch>=2.6" in call for call in calls)  # no download of the newest torch
    assert not (tmp_path / "venv" / ".complete").exists()


@pytest.mark.parametrize(
    "message",
    [
        "ERROR: Could not find a version that satisfies the requirement torch==9.9.9",
        "ERROR: No matching distribution found for torch==9.9.9",
    ],
)
def test_missing_pinned_versions_fall_back_to_the_newest_allowed(tmp_path, message):
    proc, calls = _setup(tmp_path, message)
    assert proc.returncode == 0, proc.stderr
    assert "pinned PyTorch (torch==9.9.9 torchvision==9.9.9) not available here" in proc.stderr
    assert any("torch>=2.6" in call for call in calls)
    assert (tmp_path / "venv" / ".complete").exists()
