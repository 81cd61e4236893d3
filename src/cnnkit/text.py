"""Plain-text tables in a terminal: the columns a string takes, for Korean (and other wide) text.

A Hangul syllable or a CJK ideograph takes two terminal columns, a combining mark none; Python's
``str.ljust`` and format widths count characters, so a table of Korean class names would not
line up. The standard library's ``unicodedata`` has what this needs (no dependency).
"""

from __future__ import annotations

import unicodedata

__all__ = ["columns", "ljust"]


def columns(text: str) -> int:
    """Terminal columns of ``text``: 2 per wide or full-width character, 0 per combining mark."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        for ch in text
    )


def ljust(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` terminal columns (as ``str.ljust`` for ASCII)."""
    return text + " " * max(0, width - columns(text))
