"""Checkpoint files: how they are written, what they record, and what happens when saving fails
or the file is damaged."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnkit
from cnnkit.engine.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    tensor_checksum,
)
from cnnkit.io import atomic
from cnnkit.io.atomic import TEMP_PREFIX, atomic_write_text
from cnnkit.tasks.classify.task import ClassifyTrainer

from .conftest import seal, subprocess_env


def _payload(epoch: int, size: int = 1000) -> dict:
    gen = torch.Generator().manual_seed(epoch)
    return {
        "epoch": epoch,
        "seed": 7,
        "model": {"w": torch.randn(size, generator=gen), "n": torch.tensor(epoch)},
    }


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(TEMP_PREFIX + "*"))


def _assert_old_survives(folder: Path) -> None:
    body = load_checkpoint(folder / "last.ckpt")
    assert body["epoch"] == 1
    assert torch.equal(body["model"]["w"], _payload(1)["model"]["w"])
    assert _temps(folder) == []  # the failed write cleaned up after itself


def test_write_goes_to_a_temp_file_in_the_folder_then_fsync_rename_fsync_folder(tmp_path, monkeypatch):
    events: list[tuple] = []
    real_fsync, real_replace, real_mkstemp = os.fsync, os.replace, atomic.tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        events.append(("mkstemp", Path(name)))
        return fd, name

    def fsync(fd):
        kind = "fsync-folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file"
        events.append((kind, Path(os.readlink(f"/proc/self/fd/{fd}")), os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "run" / "last.ckpt"
    save_checkpoint(target, _payload(1))
    monkeypatch.undo()

    kinds = [e[0] for e in events]
    assert kinds == ["mkstemp", "fsync-file", "replace", "fsync-folder"]
    temp = events[0][1]
    assert temp.parent == target.parent and temp.name.startswith(TEMP_PREFIX)  # same folder: rename is atomic
    assert (
        events[1][1] == temp and events[1][2] == target.stat().st_size
    )  # every byte flushed before the rename
    assert events[2][1:] == (temp, target)
    assert events[3][1] == target.parent
    assert load_checkpoint(target)["epoch"] == 1


def test_written_files_get_normal_permissions_not_mkstemps_0600(tmp_path):
    save_checkpoint(tmp_path / "last.ckpt", _payload(1))
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "last.ckpt").stat().st_mode) == 0o666 & ~umask
    (tmp_path / "notes.txt").write_text("x")
    os.chmod(tmp_path / "notes.txt", 0o640)
    atomic_write_text(tmp_path / "notes.txt", "y")  # replacing keeps the file's mode
    assert stat.S_IMODE((tmp_path / "notes.txt").stat().st_mode) == 0o640


class _FullDisk:
    """A file whose disk fills up after ``room`` bytes: the write fails part-way with ENOSPC."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.handle.write(data[: self.room])
            self.handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_disk_full_during_write_raises_and_the_old_checkpoint_survives(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "last.ckpt", _payload(1))
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k), room=4096))
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path / "last.ckpt", _payload(2, size=100_000))
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    _assert_old_survives(tmp_path)


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failure_at_fsync_or_rename_raises_and_the_old_checkpoint_survives(tmp_path, monkeypatch, failing):
    save_checkpoint(tmp_path / "last.ckpt", _payload(1))
    real = getattr(os, failing)

    def broken(*args):
        if failing == "fsync" and stat.S_ISDIR(os.fstat(args[0]).st_mode):
            return real(*args)
        raise OSError(errno.ENOSPC if failing == "fsync" else errno.EIO, f"simulated {failing} failure")

    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(OSError, match=f"simulated {failing} failure"):
        save_checkpoint(tmp_path / "last.ckpt", _payload(2))
    monkeypatch.undo()
    _assert_old_survives(tmp_path)


def test_folder_fsync_unsupported_by_the_file_system_is_not_a_failure(tmp_path, monkeypatch):
    real = os.fsync

    def no_folder_sync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd)

    monkeypatch.setattr(os, "fsync", no_folder_sync)
    save_checkpoint(tmp_path / "last.ckpt", _payload(1))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 1


def test_training_stops_with_the_disk_error_and_keeps_the_previous_epoch(
    tmp_path, monkeypatch, fashion_small
):
    train, _ = fashion_small
    data = train.take(96, seed=1)
    trainer = ClassifyTrainer(
        nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), checkpoint_path=tmp_path / "last.ckpt", seed=0
    )
    trainer.fit(data, epochs=1, batch_size=32)
    saved = load_checkpoint(tmp_path / "last.ckpt")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k), room=0))
    with pytest.raises(OSError) as info:
        trainer.fit(data, epochs=2, batch_size=32)  # epoch 2 trains, then its checkpoint cannot be written
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    body = load_checkpoint(tmp_path / "last.ckpt")
    assert body["epoch"] == 1 and body["checksum"] == saved["checksum"]
    assert _temps(tmp_path) == []


# Run in a child process, which the kernel itself makes fail: RLIMIT_FSIZE refuses to grow a file
# past a size (EFBIG: the real write path failing part-way, like a full disk), and a folder is
# made read-only with chmod. Root ignores a folder's permission bits (CAP_DAC_OVERRIDE), and
# switching to an unprivileged user cannot work here (the venv's python lives under /root), so
# the child drops the capabilities that bypass permission checks; then chmod binds it as it
# binds any user.
_CHILD = r"""
import ctypes, errno, json, os, resource, signal, sys
from pathlib import Path

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_LINUX_IMMUTABLE = 1, 2, 3, 9
header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
data = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) x 2 words
libc = ctypes.CDLL(None, use_errno=True)
if libc.capget(header, data) != 0:
    sys.exit(f"capget failed: errno {ctypes.get_errno()}")
keep = ~sum(1 << c for c in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_LINUX_IMMUTABLE))
data[0] &= keep & 0xFFFFFFFF
data[1] &= keep & 0xFFFFFFFF
if libc.capset(header, data) != 0:
    sys.exit(f"capset failed: errno {ctypes.get_errno()}")

import torch
from cnnkit.engine.checkpoint import load_checkpoint, save_checkpoint

results = {}
big = {"epoch": 2, "model": {"w": torch.ones(1_000_000)}}  # 4 MB
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
for label in ("limited", "readonly"):
    folder = Path(sys.argv[1]) / label
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    if label == "limited":
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, limit[1]))
    try:
        save_checkpoint(folder / "last.ckpt", big)
        results[label] = "saved"
    except OSError as exc:
        results[label] = errno.errorcode[exc.errno]
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    results[label + "_epoch_on_disk"] = load_checkpoint(folder / "last.ckpt")["epoch"]
    results[label + "_files"] = sorted(p.name for p in folder.iterdir())
print(json.dumps(results))
"""


def test_real_write_failures_file_size_limit_and_read_only_folder(tmp_path):
    for label in ("limited", "readonly"):
        (tmp_path / label).mkdir()
        save_checkpoint(tmp_path / label / "last.ckpt", _payload(1))
    (tmp_path / "child.py").write_text(_CHILD)
    (tmp_path / "readonly").chmod(0o555)
    try:
        result = subprocess.run(
            [sys.executable, str(tmp_path / "child.py"), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=300,
            env=subprocess_env(),
        )
    finally:
        (tmp_path / "readonly").chmod(0o755)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert results["limited"] == "EFBIG"
    assert results["readonly"] == "EACCES"
    for label in ("limited", "readonly"):
        assert results[label + "_epoch_on_disk"] == 1  # the previous checkpoint is intact
        assert results[label + "_files"] == ["last.ckpt"]  # and no temp file was left


def test_checkpoint_records_format_versions_seed_and_a_verified_checksum(reference_run):
    body = load_checkpoint(reference_run / "last.ckpt")
    assert body["format_version"] == FORMAT_VERSION
    assert body["cnnkit_version"] == cnnkit.__version__
    assert body["torch_version"] == torch.__version__
    assert body["seed"] == 42
    assert body["epoch"] == 4 and body["global_step"] == 4 * 8
    assert len(body["checksum"]) == 64
    assert body["checksum"] == tensor_checksum({k: v for k, v in body.items() if k != "checksum"})


def _flip(data: bytes, position: int) -> bytes:
    flipped = bytearray(data)
    flipped[position] ^= 0x01
    return bytes(flipped)


def _assert_clean_refusal(path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "\x1b" not in message
    assert "weights_only" not in message  # never suggests the unsafe way to load it


def test_every_single_flipped_byte_is_a_clean_checkpoint_error(tmp_path):
    save_checkpoint(tmp_path / "good.ckpt", _payload(1, size=16))
    good = (tmp_path / "good.ckpt").read_bytes()
    bad = tmp_path / "bad.ckpt"
    for position in range(len(good)):
        bad.write_bytes(_flip(good, position))
        _assert_clean_refusal(bad)


def test_flipped_bytes_in_a_real_run_checkpoint_are_refused(reference_run, tmp_path):
    good = (reference_run / "last.ckpt").read_bytes()
    bad = tmp_path / "last.ckpt"
    gen = torch.Generator().manual_seed(0)
    positions = [0, len(good) // 2, len(good) - 1, *torch.randint(len(good), (20,), generator=gen).tolist()]
    for position in positions:
        bad.write_bytes(_flip(good, position))
        _assert_clean_refusal(bad)
    bad.write_bytes(good[: len(good) // 2])  # a torn file, as a non-atomic writer would leave
    _assert_clean_refusal(bad)


def test_the_file_stays_a_zip_that_plain_torch_load_reads(reference_run):
    plain = torch.load(reference_run / "last.ckpt", weights_only=True)
    assert plain["checksum"] == load_checkpoint(reference_run / "last.ckpt")["checksum"]
    assert zipfile.ZipFile(reference_run / "last.ckpt").comment.startswith(b"cnnkit-sha256:")


def test_edited_values_unknown_format_and_missing_parts_are_refused(tmp_path):
    save_checkpoint(tmp_path / "a.ckpt", _payload(1))
    body = torch.load(tmp_path / "a.ckpt", weights_only=True)
    body["epoch"] = 3  # edited after the checksum was taken
    buffer = io.BytesIO()
    torch.save(body, buffer)
    (tmp_path / "unsealed.ckpt").write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="no integrity record"):
        load_checkpoint(tmp_path / "unsealed.ckpt")
    (tmp_path / "edited.ckpt").write_bytes(seal(buffer.getvalue()))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(tmp_path / "edited.ckpt")
    body["format_version"] = 99
    buffer = io.BytesIO()
    torch.save(body, buffer)
    (tmp_path / "future.ckpt").write_bytes(seal(buffer.getvalue()))
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_checkpoint(tmp_path / "future.ckpt")
    trainer = ClassifyTrainer(nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match=r"lacks \['global_step'"):
        trainer.load_checkpoint(tmp_path / "a.ckpt")  # verified, but not a training checkpoint
