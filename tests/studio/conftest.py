"""Fixtures of the studio tests: the shipped model and one tiny real run, served once per module."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the studio extra is not installed: pip install 'cnnkit[studio]'")


@pytest.fixture(scope="module", autouse=True)
def _studio_one_thread(one_intra_op_thread):
    """The studio's tests run on one intra-op thread (see tests/conftest.py)."""


@pytest.fixture(scope="session")
def expect_errors():
    """``expect_errors(client, [(url, status, words), ...])``: each GET answers ``status`` with
    a JSON error message holding ``words``, and no traceback."""

    def check(client, cases: list[tuple[str, int, str]]) -> None:
        for url, status, words in cases:
            response = client.get(url)
            assert response.status_code == status, (url, response.text)
            assert words in response.json()["error"] and "Traceback" not in response.text

    return check


@dataclass
class Items:
    """Real Fashion-MNIST test items: pixels uint8 [N, 28, 28], labels [N], PNG bytes of each."""

    pixels: np.ndarray
    labels: np.ndarray
    png: list[bytes]
    class_names: list[str]


@pytest.fixture(scope="session")
def items(fashion) -> Items:
    _, test = fashion
    index = list(range(8))
    pixels = test.images[index, 0].numpy()
    png = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        png.append(buffer.getvalue())
    return Items(pixels, test.labels[index].numpy(), png, list(test.class_names))


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory) -> Path:
    """hongong_cnn trained two epochs on 400 real Fashion-MNIST images (a real run folder)."""
    from cnnkit.runs.config import RunConfig
    from cnnkit.runs.train import train_run

    out = tmp_path_factory.mktemp("studio") / "tiny-run"
    config = RunConfig(limit_train=400, limit_test=100, epochs=2, patience=None, device="cpu")
    train_run(config, out, progress=False)
    return out


@pytest.fixture(scope="session")
def detect_run_dir(tmp_path_factory) -> Path:
    """A real detection run: one epoch on 48 tiny FashionScenes canvases (32 x 32)."""
    from cnnkit.cli.__main__ import main

    root = tmp_path_factory.mktemp("studio-detect")
    argv = ["train", "detect", "--canvas", "32", "--item-sizes", "12,24", "--train-images", "48"]
    argv += ["--limit-test", "4", "--epochs", "1", "--batch-size", "8", "--head-width", "16"]
    argv += ["--anchors", "2", "--max-objects", "2", "--no-progress", "--out", str(root / "detect-run")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNKIT_CACHE", str(root / "cache"))  # the generated scenes stay in the test's folder
        assert main(argv) == 0
    return root / "detect-run"


@pytest.fixture(scope="session")
def segment_run_dir(tmp_path_factory) -> Path:
    """A real semantic segmentation run: FCN-8s, one epoch on 16 tiny FashionScenes canvases."""
    from cnnkit.cli.__main__ import main

    root = tmp_path_factory.mktemp("studio-segment")
    argv = ["train", "segment", "--head", "fcn8s", "--canvas", "32", "--item-sizes", "12,24"]
    argv += ["--train-images", "16", "--limit-test", "4", "--epochs", "1", "--batch-size", "8"]
    argv += ["--no-progress", "--out", str(root / "segment-run")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNKIT_CACHE", str(root / "cache"))
        assert main(argv) == 0
    return root / "segment-run"


@pytest.fixture(scope="session")
def wide_photo(items) -> tuple[bytes, np.ndarray]:
    """(PNG bytes, pixels uint8 [96, 160]) of a photo wider than high: real Fashion-MNIST test
    item 1, enlarged 3x, on a black 160 x 96 background (off centre)."""
    photo = np.zeros((96, 160), dtype=np.uint8)
    photo[6:90, 50:134] = np.asarray(Image.fromarray(items.pixels[1]).resize((84, 84), Image.BILINEAR))
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    return buffer.getvalue(), photo
