"""Crash-safe writes: temp file in the destination folder, fsync, atomic rename, fsync folder."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

TEMP_PREFIX = ".cnnkit-tmp-"
# mkstemp makes 0600 files; a finished file gets the mode a plain open() would give it. The umask
# can only be read by setting it, so that happens once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _final_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777  # replacing a file keeps its mode
    except OSError:
        return 0o666 & ~_UMASK


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms (Windows) cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # file systems that cannot sync folders say so with these
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, str]]:
    """A temp file ``(fd, name)`` next to ``path`` that replaces ``path`` when the block succeeds.

    The caller writes and fsyncs the file (and closes ``fd``); on success the temp file gets its
    final mode, is renamed over ``path`` and the folder is fsynced. On any error the temp file is
    removed, the previous ``path`` is left as it was, and the error propagates.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise _naming(path, exc) from exc
    try:
        yield fd, tmp
        os.chmod(tmp, _final_mode(path))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            raise _naming(path, exc) from exc
        raise


def _naming(path: Path, exc: OSError) -> OSError:
    """``exc`` as the same kind of OSError that names ``path``: the temp file is ours, not the user's."""
    reason = exc.strerror or str(exc)
    return OSError(exc.errno, f"could not write this file ({reason})", str(path))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temp file next to ``path``; on success it replaces ``path`` atomically.

    On any error the temp file is removed, the previous ``path`` is left as it was, and the
    error propagates (a failed save is never silent).
    """
    with (
        _replacing(Path(path)) as (fd, _tmp),
        os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle,
    ):
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_save(path: str | os.PathLike[str], writer: Callable[[str], None]) -> None:
    """Run ``writer(temp_path)`` (for libraries that write by file name), then rename atomically."""
    with _replacing(Path(path)) as (fd, tmp):
        os.close(fd)
        writer(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())


def clean_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temp files left by an interrupted write in ``folder``; returns what was removed."""
    removed = []
    for stray in Path(folder).glob(TEMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            stray.unlink()
            removed.append(stray)
    return removed
