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


def test_a_failure_names_the_file_asked_for_not_the_temp_file(tmp_path, monkeypatch):
    # /proc takes no new files: mkstemp fails there with the temp file's name in the error.
    with pytest.raises(FileNotFoundError) as info:
        atomic_write_text("/proc/cnnkit-test.txt", "text")
    assert info.value.filename == "/proc/cnnkit-test.txt"
    assert "No such file or directory" in info.value.strerror

    # A writer that fails on the temp file by name (as exporters do), and a full disk at fsync.
    def writer(tmp: str) -> None:
        raise OSError(28, "No space left on device", tmp)

    with pytest.raises(OSError) as info:
        atomic_save(tmp_path / "model.onnx", writer)
    assert info.value.filename == str(tmp_path / "model.onnx")
    assert info.value.errno == 28 and "No space left on device" in info.value.strerror

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cnnkit.io.atomic.os.fsync", no_space)
    with pytest.raises(OSError) as info:
        atomic_write_text(tmp_path / "a.txt", "text")
    assert info.value.filename == str(tmp_path / "a.txt")
    assert not list(tmp_path.glob(TEMP_PREFIX + "*"))
