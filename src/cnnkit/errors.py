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
