"""Owning a run folder: one writer at a time, as git's and SQLite's lock files do."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError

LOCK_FILE = ".cnnkit.lock"
_held: dict[Path, tuple[Path, bool]] = {}  # resolved folder -> (its lock file, remove if empty)


def claim_folder(out: Path, remove_if_empty: bool = False) -> None:
    """Make ``out`` this process's run folder: an exclusive create of ``out/.cnnkit.lock``
    (PID, host, start time), as git's and SQLite's lock files do. The lock goes at exit
    (``release_folder``); one left by a process that no longer runs on this host is taken over
    with a warning on stderr. A second claim by the same process is a no-op.

    Raises:
        UsageError: another live process (or one on another host) holds the folder; the message
            names it and the lock file.
    """
    key = out.resolve()
    if key in _held:
        return
    try:
        made = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"--out {out}: a part of this path is a file, not a folder") from None
    lock = out / LOCK_FILE
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            if not _stale(owner, mine):
                raise UsageError(_owned_message(out, lock, owner)) from None
            print(
                f"cnnkit: warning: {lock} was left by PID {owner['pid']} on {owner['host']}, which "
                "no longer runs; taking the run folder over",
                file=sys.stderr,
            )
            _remove_stale(lock, owner)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(mine, handle)
        if not _held:
            atexit.register(_release_all)
        _held[key] = (lock, made and remove_if_empty)
        return
    raise UsageError(f"run folder {out} is being claimed by other processes; try again")


def _remove_stale(lock: Path, owner: dict[str, Any]) -> None:
    """Move the dead owner's lock aside; if another process claimed the folder in between (the
    moved file is its fresh lock), put that one back."""
    aside = lock.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
    try:
        os.replace(lock, aside)
    except FileNotFoundError:
        return  # another process took it over first
    if _lock_owner(aside) != owner:
        with contextlib.suppress(OSError):
            os.link(aside, lock)  # fails if yet another claim exists: then that one stands
    with contextlib.suppress(OSError):
        aside.unlink()


def release_folder(out: Path) -> None:
    """Give up ``out`` (delete its lock) if this process holds it."""
    held = _held.pop(out.resolve(), None)
    if held is None:
        return
    lock, remove_if_empty = held
    with contextlib.suppress(OSError):
        lock.unlink()
    if remove_if_empty:
        with contextlib.suppress(OSError):
            lock.parent.rmdir()  # only succeeds while empty


def _release_all() -> None:
    for key in list(_held):
        release_folder(key)


def _lock_owner(lock: Path) -> dict[str, Any]:
    try:
        owner = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        owner = None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return {"pid": None, "host": "?", "since": "?"}
    return owner


def _stale(owner: dict[str, Any], mine: dict[str, Any]) -> bool:
    """True when the owner is this very process, or a process of this host that has ended."""
    if owner["pid"] is None or owner.get("host") != mine["host"]:
        return False  # being written this instant, or on a machine whose processes we cannot see
    if owner["pid"] == mine["pid"]:
        return True
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it runs, as another user
        return False
    return False


def _owned_message(out: Path, lock: Path, owner: dict[str, Any]) -> str:
    if owner["pid"] is None:
        who = "another process (its lock file is unreadable or being written)"
    else:
        who = f"PID {owner['pid']} on {owner.get('host')} (since {owner.get('since')})"
    return (
        f"run folder {out} is in use by {who}; wait for it to finish or choose another --out "
        f"(if no cnnkit runs there any more, delete {lock})"
    )
