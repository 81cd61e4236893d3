"""Class names in the reader's language: ``CNNKIT_LANG=ko`` (``--lang ko``) names the Fashion-MNIST
classes as 혼공머신 does (티셔츠, 바지, ...), drawn with a Korean font when one is installed
(Debian's fonts-nanum) and left in English otherwise: never boxes instead of glyphs."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..data.fashion_mnist import CLASS_NAMES, CLASS_NAMES_KO

LANGS = ("en", "ko")
TRANSLATIONS = {"ko": dict(zip(CLASS_NAMES, CLASS_NAMES_KO))}
# Preferred families, most readable first; any other installed font with every glyph also works.
KOREAN_FONTS = ("NanumGothic", "NanumBarunGothic", "Noto Sans CJK KR", "Malgun Gothic", "AppleGothic")


def current_lang() -> str:
    """The language of class names: ``$CNNKIT_LANG`` (``en`` when unset).

    Raises:
        ValueError: an unknown language.
    """
    lang = os.environ.get("CNNKIT_LANG", "en") or "en"
    if lang not in LANGS:
        raise ValueError(f"CNNKIT_LANG must be one of {', '.join(LANGS)}, got {lang!r}")
    return lang


def translate(names: Sequence[str], lang: str | None = None) -> list[str]:
    """``names`` in ``lang`` (default ``current_lang()``); names without a translation stay as they are."""
    table = TRANSLATIONS.get(lang or current_lang(), {})
    return [table.get(str(n), str(n)) for n in names]


def has_glyphs(font_path: str | os.PathLike[str], text: str) -> bool:
    """Whether the font file maps every character of ``text`` to a glyph (not the missing-glyph box)."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(font_path))
    return all(font.get_char_index(ord(ch)) != 0 for ch in text if not ch.isspace())


@functools.cache
def korean_font() -> str | None:
    """The path of an installed font that draws every Korean class name, or None."""
    from matplotlib import font_manager

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


def has_hangul(text: str) -> bool:
    """Whether ``text`` has Korean letters (Hangul syllables or jamo), which need a Korean font."""
    return any(
        "\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff" or "\u3131" <= ch <= "\u318e" for ch in text
    )


def figure_text(text: str) -> str:
    """``text`` for a figure made after this call: if it has Hangul (a class or folder name), a
    Korean font becomes matplotlib's fallback after the default one (Latin text keeps its font);
    without one, one warning (the letters show as boxes)."""
    if has_hangul(text) and not _use_korean_font():
        _warn_once("no Korean font found (install fonts-nanum): Korean names in figures show as boxes")
    return text


def figure_names(names: Sequence[str]) -> list[str]:
    """Class names for a figure: translated when the language asks for it, and drawn with a
    Korean font whenever a name has Hangul, translated or the data's own (a folder named 운동화;
    see :func:`figure_text`). Without a Korean font, translations stay in English."""
    original = [str(n) for n in names]
    translated = translate(names)
    if translated != original and not _use_korean_font():
        warnings.warn(
            "no Korean font found (install fonts-nanum); figures keep the English class names",
            stacklevel=2,
        )
        translated = original
    return [figure_text(n) for n in translated]


def _use_korean_font() -> bool:
    """Make the Korean font matplotlib's fallback (last in ``font.family``); False without one."""
    path = korean_font()
    if path is None:
        return False
    import matplotlib
    from matplotlib import font_manager

    family = font_manager.FontProperties(fname=path).get_name()
    families = list(matplotlib.rcParams["font.family"])
    if family not in families:
        matplotlib.rcParams["font.family"] = [*families, family]
        # The Korean fonts' bold files declare weight 600: matplotlib logs, for each bold title,
        # that it used 600 for "bold". The letters are right; only that line is dropped.
        logging.getLogger("matplotlib.font_manager").addFilter(
            lambda record: not (family in record.getMessage() and "font weight" in record.getMessage())
        )
    return True


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, stacklevel=3)
