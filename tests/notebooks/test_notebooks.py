"""The course notebooks: stored as built from notebooks/src, without outputs, and every one runs.

Each runs top to bottom in a fresh kernel (nbclient) with ``CNNKIT_SMALL=1``, the small-data
switch the first cell reads; an error in any cell fails the test. The worked numbers of the
course are checked in the outputs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("notebooks_build", ROOT / "notebooks" / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)

NOTEBOOKS = [(source, lang) for source in build.sources() for lang in build.LANGS]
# What each notebook's outputs must show (the course's worked numbers), in both languages.
SHOWN = {
    "01_conv_pooling_shapes": ["(2, 427, 640, 3)", "[6., 4.]", "[8., 9.]", "[3.7500, 2.2500]",
                               "matches the notes (H, W, C): True", "35 60"],
    "02_hongong_cnn_training": ["Total params: 333,526", "True"],
    "03_looking_inside": ["'count': 288"],
    "04_architectures": ["Total params: 1,413,834", "21,797,672", "Total params: 903,400", "True True",
                         "10.5 MB per image, 526 MB for 50", "layer3 6 residual units"],
    "05_pretrained_transfer": ["china.jpg palace", "flower.jpg daisy", "test accuracy"],
    "06_detection_segmentation": ["0.1429 0.1429", "same logits on 28×28: True"],
}  # fmt: skip


def text_of(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_one_notebook_per_section_in_both_languages():
    stems = [s.stem for s in build.sources()]
    assert stems == sorted(SHOWN) and len(NOTEBOOKS) == 2 * len(stems)


@pytest.mark.parametrize(("source", "lang"), NOTEBOOKS, ids=lambda v: getattr(v, "stem", v))
def test_stored_notebook_is_built_from_its_source_without_outputs(source, lang):
    stored = nbformat.read(build.notebook_path(source, lang), as_version=4)
    assert stored == build.build(source, lang), "run `python notebooks/build.py` and commit"
    assert all(not cell.get("outputs") for cell in stored.cells if cell.cell_type == "code")
    for cell in stored.cells:
        if cell.cell_type == "markdown":  # Korean text in ko; in en only the book's name, 혼공머신
            hangul = any("\uac00" <= ch <= "\ud7a3" for ch in cell.source.replace("혼공머신", ""))
            assert hangul == (lang == "ko"), cell.source


@pytest.mark.parametrize(("source", "lang"), NOTEBOOKS, ids=lambda v: getattr(v, "stem", v))
def test_notebook_runs_and_shows_the_worked_numbers(source, lang, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_SMALL", "1")
    src = str(ROOT / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    nb = build.execute(build.build(source, lang), tmp_path, timeout=600)
    text = text_of(nb)
    assert "missing from font" not in text, "boxes instead of glyphs: use cnnkit.viz.lang.figure_names"
    missing = [s for s in SHOWN[source.stem] if s not in text]
    assert not missing, f"{source.stem} ({lang}) does not show {missing}"
    if lang == "ko" and source.stem in ("02_hongong_cnn_training", "05_pretrained_transfer"):
        assert any(name in text for name in ("앵클 부츠", "스니커즈", "샌달", "셔츠", "바지")), "Korean names"
