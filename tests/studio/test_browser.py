"""`cnnkit studio fashion` in Debian's Chromium, driven by Playwright: upload a real Fashion-MNIST
test image, read the predicted class, open a layer and count its maps, click a map, show
Grad-CAM, filters and a drawing, then a run's curves as its history.json grows; then, on a
160 x 96 photo painted at its own size, a detection run's boxes under a score slider, a
segmentation run's classes, a localization run's box and a Mask R-CNN run's masks; no request
leaves 127.0.0.1 and the page logs no error.

Screenshots go to the test's temporary folder; with CNNKIT_UPDATE_FIGURES=1 also to
docs/figures/studio-*.png (the ones docs/studio.md shows).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch

CHROMIUM = "/usr/bin/chromium"
FIGURES = Path(__file__).resolve().parents[2] / "docs" / "figures"


def _browser_or_skip() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the studio extra)")
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        print("skipping the browser test: no chromium here (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def run_copy(tiny_run_dir, tmp_path_factory) -> Path:
    """A copy of the tiny run whose history.json the test extends, as `cnnkit train` would."""
    return Path(shutil.copytree(tiny_run_dir, tmp_path_factory.mktemp("live") / "tiny-run"))


@pytest.fixture(scope="module")
def server(run_copy, detect_run_dir, segment_run_dir, localize_run_dir, maskrcnn_run_dir):
    """`cnnkit studio fashion RUN DETECT SEGMENT LOCALIZE MASKRCNN` on a free port of 127.0.0.1,
    in a thread."""
    from cnnkit.studio import create_app, load_catalog
    from cnnkit.studio.server import serve_in_thread

    targets = ["fashion", str(run_copy), str(detect_run_dir), str(segment_run_dir)]
    targets += [str(localize_run_dir), str(maskrcnn_run_dir)]
    url, stop = serve_in_thread(create_app(load_catalog(targets)))
    yield url + "/"
    stop()


# drawCurves on a 400-px canvas that records its calls: the x of each curve's points (34 px
# margins; epochs 1-3 at 34, 200 and 366 px).
CURVE_POINTS = """() => {
  const calls = [];
  const ctx = new Proxy({}, {
    get: (t, k) => (k in t ? t[k] : (...a) => calls.push([k, ...a])),
    set: (t, k, v) => ((t[k] = v), true),
  });
  const canvas = { width: 400, height: 200, getContext: () => ctx };
  const epochs = [{ loss: 1, val_loss: 2 }, { loss: 0.5 }, { loss: 0.4, val_loss: 1 }];
  drawCurves(canvas, epochs, ["loss", "val_loss"]);
  const out = {}; let key = null;
  for (const [name, ...args] of calls) {
    if (name === "beginPath") key = key === null ? "loss" : "val_loss";
    if (name === "moveTo" || name === "lineTo") (out[key] = out[key] || []).push([name, Math.round(args[0])]);
  }
  return out;
}"""
PAINTED = (
    "(() => { const c = document.getElementById('photo-overlay');"
    " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
    " let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return [c.width, c.height, n]; })()"
)  # the overlay on the photo: its size and how many of its pixels are painted


def test_studio_in_chromium(server, run_copy, items, wide_photo, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from cnnkit.models import create_model
    from cnnkit.runs.folder import shipped_weights

    chromium = _browser_or_skip()
    image = tmp_path / "ankle-boot.png"
    image.write_bytes(items.png[0])  # test item 0, labelled "Ankle boot"
    photo = tmp_path / "wide.png"
    photo.write_bytes(wide_photo[0])  # 160 x 96
    reference = create_model("hongong_cnn", weights=str(shipped_weights())).eval()
    x = torch.from_numpy(items.pixels[:1]).float()[:, None] / 255
    with torch.no_grad():
        expected = int(reference(x).argmax())
        conv2 = reference.features.conv2(reference.features.pool1(reference.features.conv1(x)))[0, 5]
    row, col = divmod(int(conv2.argmax()), 14)  # the strongest pixel of conv2's map 5
    shots = tmp_path / "shots"
    shots.mkdir()

    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)  # shared, busy cores: the first Grad-CAM imports its package
        expect.set_options(timeout=60_000)
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(server)
        page.wait_for_selector("#layers tbody tr")

        page.set_input_files("#file", str(image))
        page.wait_for_selector("#top li .name")
        predicted = page.inner_text("#top li:first-child .name")
        assert predicted == items.class_names[expected] == items.class_names[items.labels[0]] == "Ankle boot"
        assert page.locator("#top li").count() == 5

        page.click('#layers tbody tr[data-index="0"]')
        page.wait_for_selector("#maps canvas.tile")
        assert page.locator("#maps canvas.tile").count() == reference.features.conv1.weight.shape[0] == 32
        page.click('#layers tbody tr[data-index="2"]')  # conv2: 64 maps of 14 x 14
        # (Locator waits, not wait_for_function: the page's CSP forbids the eval that one uses.)
        expect(page.locator("#maps canvas.tile")).to_have_count(64)
        tile = page.locator("#maps canvas.tile").nth(5)
        size = tile.bounding_box()["width"] - 2  # 1 px border on each side
        tile.click(position={"x": 1 + (col + 0.5) * size / 14, "y": 1 + (row + 0.5) * size / 14})
        page.wait_for_selector("#pixel-info .sum")
        shown = f"channel 5, pixel ({row}, {col}) = {float(conv2[row, col]):.4f}"
        assert shown in page.inner_text("#pixel-info")
        assert "over 32 input channels" in page.inner_text("#pixel-info .sum")
        assert "ReLU" in page.inner_text("#pixel-info .sum")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(shots / "studio-layers.png"))

        page.click("#cam-run")
        expect(page.locator("#cam-info")).to_contain_text("Grad-CAM")
        assert "Ankle boot" in page.inner_text("#cam-info")
        painted = page.evaluate(
            "(() => { const c = document.getElementById('overlay');"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return [c.width, n]; })()"
        )
        assert painted == [28, 28 * 28]  # the heat map covers the whole input
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(shots / "studio-gradcam.png"))

        page.click('#layers tbody tr[data-index="0"]')
        page.click("#tab-weights")
        expect(page.locator("#filters canvas")).to_have_count(32)
        assert "freshly initialised" in page.inner_text("#hist-info")
        page.screenshot(path=str(shots / "studio-filters.png"))

        page.click("#tab-maps")
        box = page.locator("#draw").bounding_box()
        page.mouse.move(box["x"] + 45, box["y"] + 30)  # a "U": trousers seen from below, roughly
        page.mouse.down()
        for x, y in ((45, 140), (125, 140), (125, 30)):
            page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
        page.mouse.up()
        first_input = page.evaluate("document.getElementById('seen-info').textContent")
        page.click("#draw-use")
        expect(page.locator("#cam-info")).to_have_text("")  # a new input clears the old heat map
        expect(page.locator("#maps canvas.tile")).to_have_count(32)
        assert page.locator("#top li").count() == 5 and first_input

        page.select_option("#model", "2-tiny-run")  # the run: its curves, polled every 2 s
        expect(page.locator("#curves-live")).to_contain_text("2 epochs")
        page.screenshot(path=str(shots / "studio-curves.png"))
        history = json.loads((run_copy / "history.json").read_text())
        # An epoch without validation, as fit(validation_freq=2) writes it: no val_ keys.
        row = {k: v for k, v in history[-1].items() if not k.startswith("val_")}
        history.append({**row, "epoch": 3, "loss": history[-1]["loss"] * 0.9})
        (run_copy / "history.json.tmp").write_text(json.dumps(history))
        os.replace(run_copy / "history.json.tmp", run_copy / "history.json")  # as training writes it
        expect(page.locator("#curves-live")).to_contain_text("3 epochs · updating live")
        # Each curve's points stand at their own epochs: validation after epochs 1 and 3 only.
        assert page.evaluate(CURVE_POINTS) == {
            "loss": [["moveTo", 34], ["lineTo", 200], ["lineTo", 366]],
            "val_loss": [["moveTo", 34], ["lineTo", 366]],
        }

        page.select_option("#model", "3-detect-run")  # boxes instead of classes, and a slider
        expect(page.locator("#det-box")).to_be_visible()
        expect(page.locator("#cam-box")).to_be_hidden()
        page.set_input_files("#file", str(photo))
        expect(page.locator("#det-list li")).to_have_count(1)  # at 0.30: none of a 1-epoch run's boxes
        expect(page.locator("#det-list")).to_contain_text("no box scores 0.30 or more")
        expect(page.locator("#photo-info")).to_have_text("160×96, as uploaded")
        page.locator("#score").fill("0")
        assert page.locator("#det-list li.det").count() > 0
        width, height, boxes = page.evaluate(PAINTED)
        assert (width, height) == (160, 96) and boxes > 0  # outlines drawn on the photo, at its size

        page.select_option("#model", "4-segment-run")  # every pixel's class
        expect(page.locator("#seg-box")).to_be_visible()
        expect(page.locator("#det-box")).to_be_hidden()
        page.set_input_files("#file", str(photo))
        expect(page.locator("#seg-list li").first).to_contain_text("% of the pixels")
        assert page.evaluate(PAINTED)[:2] == [160, 96]

        page.select_option("#model", "5-localize-run")  # one box and its class
        expect(page.locator("#det-title")).to_have_text("Localization")
        page.set_input_files("#file", str(photo))
        page.locator("#score").fill("0")
        expect(page.locator("#det-list li.det")).to_have_count(1)

        page.select_option("#model", "6-maskrcnn-run")  # boxes and instance masks
        expect(page.locator("#det-title")).to_have_text("Instances")
        page.locator("#score").fill("1")
        page.set_input_files("#file", str(photo))
        expect(page.locator("#photo-info")).to_have_text("160×96, as uploaded")  # the answer is in
        expect(page.locator("#det-list li.none")).to_have_count(1)
        assert page.evaluate(PAINTED) == [160, 96, 0]  # nothing scores 1: nothing drawn
        page.locator("#score").fill("0")
        assert page.locator("#det-list li.det").count() > 0
        width, height, painted = page.evaluate(PAINTED)
        assert (width, height) == (160, 96) and painted > 0
        browser.close()

    hosts = {urlsplit(u).hostname for u in requests if not u.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, requests
    assert not problems, problems
    if os.environ.get("CNNKIT_UPDATE_FIGURES") == "1":
        for shot in shots.iterdir():
            shutil.copy(shot, FIGURES / shot.name)
