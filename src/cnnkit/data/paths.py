"""Paths read from data files stay inside the dataset folder; their text files are UTF-8.

A COCO ``file_name``, a YOLO image or a mask pair is resolved (``..`` and symlinks followed) and
must land under the dataset root; otherwise the entry is refused by name, and the file it points
at is never opened (so its bytes never reach a message).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError

__all__ = ["inside", "read_lines"]


def inside(root: str | os.PathLike[str], entry: str | os.PathLike[str], where: str) -> Path:
    """``root / entry``, checked to resolve to a place under ``root``.

    Args:
        root: the dataset folder.
        entry: a path as written in the data file (relative to ``root``), or a file found in it.
        where: what to call the entry in the message (file, list and index).

    Returns:
        ``root / entry`` (unresolved, so messages show the path as the data names it).

    Raises:
        DataError: an absolute path, or one that leads outside ``root`` (``..``, a symlink).
    """
    root = Path(root)
    path = root / entry
    if Path(entry).is_absolute() or not _under(path.resolve(), root.resolve()):
        raise DataError(
            f"{where}: {str(entry)!r} leads outside the dataset folder {root}; image paths must "
            "be relative and stay inside it (no '..', absolute paths or links out)"
        )
    return path


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """The lines of a dataset's UTF-8 text file (a label list, ``classes.txt``).

    Raises:
        DataError: not UTF-8 or unreadable, naming the file.
    """
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
