"""Exceptions that carry a message meant for the user (the CLI prints them as one line)."""


class CnnkitError(Exception):
    """Base class of cnnkit's own errors."""


class DataError(CnnkitError, ValueError):
    """A data file or folder that cannot be used; the message names the file and the problem."""


class DataNotFoundError(CnnkitError, FileNotFoundError):
    """Data that is not on this machine; the message says how to get it."""


class UsageError(CnnkitError, ValueError):
    """A command-line argument that cannot be used (exit code 2)."""


class TrainingError(CnnkitError, RuntimeError):
    """Training cannot go on (a non-finite loss, for example); exit code 1."""


def warn_caller(message: str) -> None:
    """``warnings.warn(message)`` pointing at the first caller outside cnnkit (the user's line)."""
    import sys
    import warnings
    from pathlib import Path

    package = str(Path(__file__).parent)
    level, frame = 2, sys._getframe(1)  # stacklevel 1 is this function, 2 its caller
    while frame is not None and frame.f_code.co_filename.startswith(package):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, UserWarning, stacklevel=level)
