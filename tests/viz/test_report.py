"""The HTML run report: every section, embedded images only, nothing fetched from elsewhere."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

from PIL import Image

from cnnkit.inspect import summary
from cnnkit.viz.report import SECTIONS


class Page(HTMLParser):
    """Collects sections, images, links and table rows of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.urls: list[str] = []  # every attribute that can make a browser fetch something
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.current = attrs["id"]
            self.sections[self.current] = {"images": [], "rows": 0}
        for key in ("src", "href", "srcset", "data", "poster", "action", "background"):
            if key in attrs:
                self.urls.append(attrs[key])
        if self.current and tag == "img":
            self.sections[self.current]["images"].append(attrs["src"])
        if self.current and tag == "tr":
            self.sections[self.current]["rows"] += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def decode(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :], validate=True)))


def test_training_writes_a_self_contained_report_with_every_section(tiny_run):
    text = (tiny_run.path / "report.html").read_text(encoding="utf-8")  # written by train_run
    page = parse(text)
    assert list(page.sections) == list(SECTIONS)
    for key in ("curves", "confusion", "mistakes", "filters", "feature-maps", "diagram"):
        (src,) = page.sections[key]["images"]
        image = decode(src)
        assert image.format == "PNG" and min(image.size) > 50
    rows = summary(tiny_run.model, (1, 28, 28)).rows
    assert page.sections["summary"]["rows"] == len(rows) + 1  # header + one row per layer
    for row in rows:
        assert f"<td>{row.name}</td>" in text
    assert page.sections["metrics"]["rows"] >= 10 + 1  # per-class table of the 10 classes
    assert f"{tiny_run.metrics['test_accuracy']:.4f}" in text
    assert "<tr><td>model</td><td>hongong_cnn</td></tr>" in text  # the config table
    assert "<tr><td>limit_train</td><td>600</td></tr>" in text
    # Nothing outside the file: only data: URLs and in-page anchors, no scripts or stylesheets.
    assert page.urls and all(u.startswith(("data:", "#")) for u in page.urls)
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert "http://" not in text and "https://" not in text and "url(" not in text
    assert 'class="failed"' not in text
