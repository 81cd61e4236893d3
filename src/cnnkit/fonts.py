"""A font that draws Korean: for figures (matplotlib) and labels drawn on images (Pillow).

Class names can be Korean (혼공머신's names with ``--lang ko``, or a data set's own folders and
categories); the fonts matplotlib and Pillow use by default have no Hangul and would draw
boxes. Debian's fonts-nanum (which the set-up installs) or another installed Korean font is
found here; without one, callers keep their text in English or warn.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

# Preferred families, most readable first; any other installed font with every glyph also works.
KOREAN_FONTS = ("NanumGothic", "NanumBarunGothic", "Noto Sans CJK KR", "Malgun Gothic", "AppleGothic")


def has_hangul(text: str) -> bool:
    """Whether ``text`` has Korean letters (Hangul syllables or jamo), which need a Korean font."""
    return any(
        "\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff" or "\u3131" <= ch <= "\u318e" for ch in text
    )


def has_glyphs(font_path: str | os.PathLike[str], text: str) -> bool:
    """Whether the font file maps every character of ``text`` to a glyph (not the missing-glyph box)."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(font_path))
    return all(font.get_char_index(ord(ch)) != 0 for ch in text if not ch.isspace())


@functools.cache
def korean_font() -> str | None:
    """The path of an installed font that draws every Korean class name, or None."""
    from matplotlib import font_manager

    from .data.fashion_mnist import CLASS_NAMES_KO

    needed = "".join(CLASS_NAMES_KO)
    known = {Path(f.fname).name for f in font_manager.fontManager.ttflist}
    found = {f.fname for f in font_manager.fontManager.ttflist if f.name in KOREAN_FONTS}
    # Fonts installed after matplotlib built its cache are not in it yet: look on disk too.
    for path in font_manager.findSystemFonts():
        stem = Path(path).stem.lower()
        if any(k in stem for k in ("nanum", "notosanscjk", "malgun", "applegothic")):
            found.add(path)

    def preference(path: str) -> tuple[int, int, str]:
        stem = Path(path).stem.lower().replace(" ", "")
        family = next((i for i, n in enumerate(KOREAN_FONTS) if n.lower().replace(" ", "") == stem), 99)
        heavy = any(w in stem for w in ("bold", "light", "heavy", "extra", "coding"))
        return family, heavy, path

    for path in sorted(found, key=preference):
        try:
            if has_glyphs(path, needed):
                # With its bold and light files (NanumGothicBold.ttf), so bold titles find theirs.
                chosen = Path(path)
                for sibling in chosen.parent.glob(f"{chosen.stem}*{chosen.suffix}"):
                    weight = sibling.stem[len(chosen.stem) :]
                    if weight in ("", "Bold", "ExtraBold", "Light") and sibling.name not in known:
                        font_manager.fontManager.addfont(str(sibling))
                return path
        except (OSError, RuntimeError):
            continue
    return None
