"""`cnnkit predict` / `cnnkit viz` with efficientnet_lite0's ImageNet weights, on real photos, offline."""

from __future__ import annotations

import dataclasses
import json

import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

import cnnkit.cli.__main__ as cli
from cnnkit.models import _packaged
from cnnkit.models._packaged import find_packaged_weights


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("china", "flower"):
        paths[name] = str(folder / f"{name}.jpg")
        Image.fromarray(load_sample_image(f"{name}.jpg")).save(paths[name], quality=95)
    return paths


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_uses_the_installed_weights(capsys, photos):
    code, out, err = run(capsys, "predict", "efficientnet_lite0", photos["china"], photos["flower"], "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["top"][0]["class"] for row in rows] == ["palace", "daisy"]
    assert all(len(row["top"]) == 5 for row in rows)
    assert all(row["top"][0]["probability"] > row["top"][1]["probability"] for row in rows)


def test_missing_package_is_one_line_with_the_pip_command(capsys, photos, monkeypatch):
    spec = find_packaged_weights("efficientnet_lite0", "IMAGENET1K")
    monkeypatch.setitem(
        _packaged._PACKAGED, (spec.model, spec.name), dataclasses.replace(spec, package="cnnkit_absent_pkg")
    )
    code, out, err = run(capsys, "predict", "efficientnet_lite0", photos["china"])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "pip install 'cnnkit[imagenet]'" in err


def test_viz_gradcam_and_feature_maps(capsys, photos, tmp_path):
    cam = tmp_path / "cam.png"
    code, out, err = run(
        capsys, "viz", "gradcam", "efficientnet_lite0", "--image", photos["china"], "--out", str(cam)
    )
    assert code == 0, err
    assert Image.open(cam).size[0] > 200
    maps = tmp_path / "maps.png"
    code, out, err = run(
        capsys, "viz", "feature-maps", "efficientnet_lite0", "--image", photos["flower"],
        "--layer", "stages.1", "--max-maps", "8", "--out", str(maps),
    )  # fmt: skip
    assert code == 0, err
    assert maps.is_file()
