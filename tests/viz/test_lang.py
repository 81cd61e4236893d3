"""Korean class names in figures (혼공머신's names), the font that draws them, and the fallback."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest
from fontTools.ttLib import TTFont
from PIL import Image

from cnnkit import viz as lang_figs
from cnnkit.cli.__main__ import main
from cnnkit.data import CLASS_NAMES, CLASS_NAMES_KO
from cnnkit.viz import lang, plot_confusion_matrix, save_figure  # noqa: F401


def render(names_lang: str, monkeypatch) -> tuple[np.ndarray, list[str], list[str]]:
    """A confusion matrix of Fashion-MNIST classes as pixels, its tick labels and the warnings."""
    monkeypatch.setenv("CNNKIT_LANG", names_lang)
    matrix = np.diag(np.arange(10, 20))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = plot_confusion_matrix(matrix, CLASS_NAMES)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=60)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    return np.asarray(Image.open(buf)), labels, [str(w.message) for w in caught]


def test_korean_names_are_drawn_with_real_glyphs(monkeypatch):
    path = lang.korean_font()
    if path is None:  # the set-up installs fonts-nanum (run.sh apt_packages)
        pytest.fail("no Korean font installed: apt-get install fonts-nanum")
    # An independent reader of the font file: every character of every name has a glyph.
    cmap = TTFont(path, fontNumber=0).getBestCmap()
    assert all(ord(ch) in cmap for ch in "".join(CLASS_NAMES_KO) if not ch.isspace())
    english, en_labels, _ = render("en", monkeypatch)
    korean, ko_labels, caught = render("ko", monkeypatch)
    assert en_labels == CLASS_NAMES
    # 혼공머신 ch. 8's names of the ten classes
    hongong = ["티셔츠", "바지", "스웨터", "드레스", "코트", "샌달", "셔츠", "스니커즈", "가방"]
    assert ko_labels == [*hongong, "앵클 부츠"]
    assert not [w for w in caught if "missing from" in w]  # matplotlib's warning for boxes (tofu)
    assert english.shape == korean.shape and (english != korean).any()


def test_the_datas_own_korean_class_names_are_drawn_with_the_korean_font(monkeypatch):
    """An image folder's class folders named in Korean (가방/, 셔츠/): with the language left at
    English, the confusion matrix, the mistakes grid and the Grad-CAM figure still draw their
    names with real glyphs, whichever figure comes first in the process; so do learning curves
    titled with a Korean folder's name."""
    import matplotlib
    import torch

    from cnnkit import create_model
    from cnnkit.viz.confusion import Mistake

    assert lang.korean_font() is not None, "no Korean font installed: apt-get install fonts-nanum"
    monkeypatch.delenv("CNNKIT_LANG", raising=False)
    names = ["가방", "셔츠", "운동화"]
    images = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    torch.manual_seed(0)
    model = create_model("hongong_cnn", num_classes=3)
    figures = {
        "mistakes": lambda: lang_figs.plot_mistakes(images, [Mistake(0, 0, 1, 0.9)], names),
        "saliency": lambda: lang_figs.plot_saliency(
            images[0], lang_figs.saliency(model, images[0].float() / 255), names, true_label=2
        ),
        "confusion": lambda: lang_figs.plot_confusion_matrix(np.eye(3, dtype=int), names),
        "curves of a Korean folder": lambda: lang_figs.plot_history(
            [{"epoch": 1, "loss": 1.0, "accuracy": 0.5}], 1, title="hongong_cnn on 데이터/운동화"
        ),
    }
    for name, draw in figures.items():
        monkeypatch.setitem(matplotlib.rcParams, "font.family", ["sans-serif"])  # a fresh process's
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig = draw()
            fig.savefig(io.BytesIO(), format="png", dpi=50)
        texts = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
        assert any(n in texts for n in [*names, "데이터"]), name
        assert not [w for w in caught if "missing from" in str(w.message)], name


def test_without_a_korean_font_figures_stay_in_english(monkeypatch):
    english, _, _ = render("en", monkeypatch)
    monkeypatch.setattr(lang, "korean_font", lambda: None)
    fallback, labels, caught = render("ko", monkeypatch)
    assert labels == CLASS_NAMES and any("no Korean font found" in w for w in caught)
    assert np.array_equal(fallback, english)  # the same figure, no boxes


def test_translate_and_the_setting(monkeypatch):
    assert lang.translate(["Bag", "cat"], "ko") == ["가방", "cat"]  # unknown names stay
    monkeypatch.setenv("CNNKIT_LANG", "fr")
    with pytest.raises(ValueError, match="CNNKIT_LANG must be one of en, ko"):
        lang.current_lang()
    for locale, expected in (("ko_KR.UTF-8", "ko"), ("KO", "ko"), ("en_US", "en"), ("ko-KR", "ko")):
        monkeypatch.setenv("CNNKIT_LANG", locale)  # as LANG spells them
        assert lang.current_lang() == expected


def test_predict_prints_korean_names_with_lang_ko(tmp_path, fashion, capsys, monkeypatch):
    monkeypatch.delenv("CNNKIT_LANG", raising=False)
    _, test = fashion
    image = test.images[0, 0].numpy()  # the first test image: an ankle boot
    Image.fromarray(image).save(tmp_path / "boot.png")
    assert main(["predict", "fashion", str(tmp_path / "boot.png"), "--top", "1", "--lang", "ko"]) == 0
    out = capsys.readouterr().out
    assert "앵클 부츠" in out and CLASS_NAMES[int(test.labels[0])] == "Ankle boot"
    assert "CNNKIT_LANG" not in os.environ  # --lang holds for that command only
    assert main(["predict", "fashion", str(tmp_path / "boot.png"), "--top", "1"]) == 0
    assert "Ankle boot" in capsys.readouterr().out


def test_report_with_lang_ko_names_the_classes_in_korean(tiny_run, tmp_path, monkeypatch):
    # The per-class table of report.html, as its figures, in 혼공머신's names.
    monkeypatch.delenv("CNNKIT_LANG", raising=False)
    target = tmp_path / "report.html"
    assert main(["report", str(tiny_run.path), "--out", str(target), "--lang", "ko"]) == 0
    table = target.read_text(encoding="utf-8").split("<h3>per class</h3>")[1].split("</table>")[0]
    assert all(f"<td>{name}</td>" in table for name in CLASS_NAMES_KO)
    assert not any(f"<td>{name}</td>" in table for name in CLASS_NAMES)


def test_korean_tables_line_up_in_a_terminal(fashion, tmp_path, capsys, monkeypatch):
    """Hangul takes two terminal columns (wcwidth): every row of the tables of `predict`,
    `evaluate` and the class balance ends at one column, in Korean as in English."""
    from wcwidth import wcswidth

    from cnnkit.data.folders import format_balance

    monkeypatch.delenv("CNNKIT_LANG", raising=False)
    _, test = fashion
    Image.fromarray(test.images[0, 0].numpy()).save(tmp_path / "boot.png")
    korean = test.take(30, seed=0)
    korean.class_names = list(CLASS_NAMES_KO)
    balance = format_balance({"train": korean, "test": korean}).splitlines()[:12]  # header, 10, total
    assert "앵클 부츠" in balance[10] and len({wcswidth(r) for r in balance}) == 1, balance
    for lang_ in ("en", "ko"):
        assert main(["predict", "fashion", str(tmp_path / "boot.png"), "--top", "10", "--lang", lang_]) == 0
        rows = capsys.readouterr().out.splitlines()[1:]
        assert len(rows) == 10 and len({wcswidth(r) for r in rows}) == 1, rows
        assert main(["evaluate", "fashion", "--limit-test", "50", "--no-compile", "--lang", lang_]) == 0
        out = capsys.readouterr().out.splitlines()
        start = next(i for i, r in enumerate(out) if r.startswith("class "))
        table = out[start : start + 11]  # header and 10 classes
        assert ("앵클 부츠" in table[10]) == (lang_ == "ko") and len({wcswidth(r) for r in table}) == 1, table


def test_detection_labels_in_korean_are_drawn_with_korean_glyphs():
    """A detection data set's own Korean categories: each syllable is its own glyph on the image,
    not one missing-glyph box (with a font without Hangul, '가' and '방' would draw the same)."""
    import torch

    from cnnkit.tasks.detection.draw import draw_detections

    image = torch.zeros(1, 32, 32, dtype=torch.uint8)
    box = torch.tensor([[4.0, 4.0, 28.0, 28.0]])

    def drawn(name: str) -> torch.Tensor:
        return draw_detections(image, box, torch.tensor([0]), [name], scale=4)

    assert not torch.equal(drawn("가"), drawn("방"))
    assert not torch.equal(drawn("가"), drawn("A"))  # Latin labels still drawn, with this font too
