"""io/atomic.py: both writers replace the file only on success and never leave a temp file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnkit.io.atomic import TEMP_PREFIX, atomic_save, atomic_write, atomic_write_text


def test_both_writers_replace_the_file_on_success(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "text")
    atomic_save(tmp_path / "b.bin", lambda tmp: Path(tmp).write_bytes(b"bytes"))
    assert (tmp_path / "a.txt").read_text() == "text"
    assert (tmp_path / "b.bin").read_bytes() == b"bytes"
    assert not list(tmp_path.glob(TEMP_PREFIX + "*"))


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "keep.bin"
    target.write_bytes(b"old")

    def failing_writer(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save(target, failing_writer)
    with pytest.raises(KeyError), atomic_write(target) as handle:
        handle.write(b"half")
        raise KeyError("interrupted")
    assert target.read_bytes() == b"old"
    assert not list(tmp_path.glob(TEMP_PREFIX + "*"))
