"""Class names in the reader's language: ``CNNKIT_LANG=ko`` (``--lang ko``) names the Fashion-MNIST
classes as 혼공머신 does (티셔츠, 바지, ...), drawn with a Korean font when one is installed
(Debian's fonts-nanum) and left in English otherwise: never boxes instead of glyphs."""

from __future__ import annotations

import functools
import logging
import os
import re
import warnings
from collections.abc import Sequence

from ..data.fashion_mnist import CLASS_NAMES, CLASS_NAMES_KO
from ..fonts import KOREAN_FONTS, has_glyphs, has_hangul, korean_font  # noqa: F401 (public here too)

LANGS = ("en", "ko")
TRANSLATIONS = {"ko": dict(zip(CLASS_NAMES, CLASS_NAMES_KO))}


def current_lang() -> str:
    """The language of class names: ``$CNNKIT_LANG`` (``en`` when unset).

    Raises:
        ValueError: an unknown language.
    """
    raw = os.environ.get("CNNKIT_LANG", "en") or "en"
    lang = re.split(r"[_.@-]", raw.strip().lower(), maxsplit=1)[0]  # a locale too: ko_KR.UTF-8
    if lang not in LANGS:
        raise ValueError(
            f"CNNKIT_LANG must be one of {', '.join(LANGS)} (ko: Korean), or a locale of one "
            f"such as ko_KR.UTF-8; got {raw!r}"
        )
    return lang


def translate(names: Sequence[str], lang: str | None = None) -> list[str]:
    """``names`` in ``lang`` (default ``current_lang()``); names without a translation stay as they are."""
    table = TRANSLATIONS.get(lang or current_lang(), {})
    return [table.get(str(n), str(n)) for n in names]


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
