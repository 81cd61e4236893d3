"""Small helpers for the text the command line prints."""


def count(n: int, noun: str) -> str:
    """``'1 epoch'``, ``'11 epochs'``: a number with its noun in the right number."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
