"""Small helpers for the text the command line prints."""


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``'1 epoch'``, ``'11 epochs'``: a number with its noun in the right number (``plural``
    where adding an s is wrong: ``count(2, "class", "classes")``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"
