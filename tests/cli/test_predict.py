"""`cnnkit predict` end to end, on real photos, with no network."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_sample_image

import cnnkit.cli.__main__ as cli
from cnnkit import create_model
from cnnkit.cli.predict import fashion_asset
from cnnkit.data.fashion_mnist import CLASS_NAMES
from cnnkit.io.weights import metadata_json, read_weights, save_weights
from cnnkit.runs.config import RunConfig

NAMES = [f"kind-{i}" for i in range(10)]


REGISTERED = "predict" in cli.COMMANDS


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    if not REGISTERED:  # test the command itself even while the list lacks it (see below)
        monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, "predict"])


def test_predict_is_a_registered_subcommand():
    assert REGISTERED, "add 'predict' to COMMANDS in src/cnnkit/cli/__main__.py"


def predict(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """china.jpg / flower.jpg (shrunk) as JPEG, PNG and WebP, a subfolder, and a corrupt file."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "more").mkdir()
    paths = {}
    for name in ("china", "flower"):
        image = Image.fromarray(load_sample_image(f"{name}.jpg")).resize((160, 107))
        paths[f"{name}.jpg"] = folder / f"{name}.jpg"
        image.save(paths[f"{name}.jpg"], quality=90)
        paths[f"{name}.png"] = folder / "more" / f"{name}.png"
        image.save(paths[f"{name}.png"])
    data = paths["china.jpg"].read_bytes()
    paths["broken.jpg"] = folder / "broken.jpg"
    paths["broken.jpg"].write_bytes(data[: len(data) // 3])
    paths["folder"] = folder
    return paths


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory) -> Path:
    """hongong_cnn weights with class names in the safetensors metadata."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "hongong.safetensors"
    meta = metadata_json(model="hongong_cnn", class_names=NAMES, input_shape=[1, 28, 28], normalize=None)
    save_weights(create_model("hongong_cnn").state_dict(), path, metadata=meta)
    return path


def test_table_per_image_and_the_corrupt_file_reported(capsys, photos, small_weights):
    code, out, err = predict(
        capsys,
        "hongong_cnn",
        photos["china.jpg"],
        photos["broken.jpg"],
        photos["flower.jpg"],
        "--weights",
        small_weights,
        "--top",
        "3",
    )
    assert code == 1
    assert f"{photos['broken.jpg']}: truncated or corrupt JPEG" in err
    assert "1 of 3 input(s) could not be predicted" in err
    lines = out.splitlines()
    assert lines[0] == str(photos["china.jpg"]) and lines[4] == str(photos["flower.jpg"])
    assert len(lines) == 8 and all(any(n in line for n in NAMES) for line in lines[1:4] + lines[5:])
    assert str(photos["broken.jpg"]) not in out


def test_json_lines_walk_folders_and_match_the_model(capsys, photos, small_weights):
    code, out, err = predict(
        capsys, "hongong_cnn", photos["folder"], "--weights", small_weights, "--json", "--top", "10"
    )
    assert code == 1  # the broken file is in the folder
    rows = [json.loads(line) for line in out.splitlines()]
    files = [Path(r["file"]).name for r in rows]
    assert files == ["broken.jpg", "china.jpg", "flower.jpg", "china.png", "flower.png"]
    assert "error" in rows[0] and rows[0]["error"].startswith(str(photos["broken.jpg"]))
    # The probabilities are the model's on the documented preprocessing.
    from cnnkit.data.preprocess import Preprocess

    model = create_model("hongong_cnn", weights=small_weights).eval()
    pre = Preprocess.from_config({"input_shape": [1, 28, 28], "normalize": None})
    with torch.no_grad():
        probs = torch.softmax(model(pre(photos["china.jpg"])[None]), 1)[0]
    china = rows[1]["top"]
    assert [t["class"] for t in china] == [NAMES[i] for i in probs.argsort(descending=True).tolist()]
    assert china[0]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
    assert sum(t["probability"] for t in china) == pytest.approx(1.0, abs=1e-5)


def test_imagenet_weights_file_resize_modes_and_caffe(capsys, tmp_path, photos):
    torch.manual_seed(0)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    tops = []
    for flags in (["--resize", "crop"], ["--resize", "pad", "--preprocess", "caffe"]):
        code, out, err = predict(capsys, "resnet18", photos["china.png"], "--weights", path, "--json", *flags)
        assert code == 0 and "assuming ImageNet-1k" in err
        tops.append(json.loads(out)["top"])
    assert all(len(top) == 5 for top in tops)
    assert tops[0] != tops[1]  # the resize mode and normalisation do change the input


def test_pickled_code_is_refused_and_never_runs(capsys, tmp_path, photos):
    marker = tmp_path / "MARKER"

    class WritesMarker:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"fc.weight": WritesMarker()}, protocol=2))
    code, out, err = predict(capsys, "resnet18", photos["china.jpg"], "--weights", evil)
    assert code == 2 and "evil.pth was refused" in err and out == ""
    assert not marker.exists()


def test_torchvision_name_offline_names_the_file(capsys, tmp_path, photos):
    code, _, err = predict(capsys, "resnet50", photos["china.jpg"], "--weights", "IMAGENET1K_V2")
    expected = tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert code == 2 and str(expected) in err


def test_usage_errors(capsys, photos, small_weights):
    code, _, err = predict(capsys, "resnet18", photos["china.jpg"])
    assert code == 2 and "resnet18 needs --weights" in err
    code, _, err = predict(capsys, "resnt18", photos["china.jpg"], "--weights", small_weights)
    assert code == 2 and "did you mean resnet18" in err
    code, _, err = predict(
        capsys, "hongong_cnn", photos["china.jpg"], "--weights", small_weights, "--top", "0"
    )
    assert code == 2 and "--top must be >= 1" in err
    code, out, err = predict(capsys, "hongong_cnn", "no-such.png", "--weights", small_weights)
    assert code == 1 and "no-such.png: no such file or folder" in err


def test_run_folder(capsys, tmp_path, photos, small_weights):
    run = tmp_path / "run"
    run.mkdir()
    state, _ = read_weights(small_weights)
    save_weights(state, run / "best.safetensors")
    record = {
        "run": RunConfig(model="hongong_cnn").to_dict(),
        "class_names": list(CLASS_NAMES),
        "input_shape": [1, 28, 28],
        "num_classes": 10,
        "normalize": None,
    }
    (run / "config.json").write_text(json.dumps(record))
    code, out, _ = predict(capsys, run, photos["flower.png"], "--json", "--top", "1")
    assert code == 0 and json.loads(out)["top"][0]["class"] in CLASS_NAMES
    code, _, err = predict(capsys, run, photos["flower.png"], "--weights", small_weights)
    assert code == 2 and "brings its own weights" in err


def _clothing_photo(path: Path) -> None:
    """A dark pair of trousers on a light studio background, as a shop photographs it."""
    pixels = np.full((360, 240, 3), 238, np.uint8)
    pixels[40:330, 60:112] = (40, 45, 70)
    pixels[40:330, 128:180] = (40, 45, 70)
    pixels[40:90, 60:180] = (40, 45, 70)
    Image.fromarray(pixels).save(path)


def test_fashion_uses_the_shipped_model(capsys, tmp_path):
    asset = fashion_asset()
    assert asset.is_file() and asset.stat().st_size <= 5 * 1024**2
    _, metadata = read_weights(asset)
    assert json.loads(metadata["class_names"]) == CLASS_NAMES
    assert json.loads(metadata["preprocess"]) == {"fashion_mnist": True, "resize": "pad"}
    photo = tmp_path / "trousers.png"
    _clothing_photo(photo)
    code, out, _ = predict(capsys, "fashion", photo, "--json", "--top", "3")
    assert code == 0
    assert json.loads(out)["top"][0]["class"] == "Trouser"


def test_fashion_on_real_test_images(capsys, tmp_path):
    """Exported Fashion-MNIST test images go through unchanged and are mostly right."""
    from cnnkit.data.fashion_mnist import load_split

    test = load_split(None, "test").take(40, seed=0)
    for i, (image, label) in enumerate(zip(test.images, test.labels)):
        Image.fromarray(image[0].numpy()).save(tmp_path / f"{i:02d}-{int(label)}.png")
    code, out, err = predict(capsys, "fashion", tmp_path, "--json", "--top", "1")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    right = sum(r["top"][0]["index"] == int(Path(r["file"]).stem.split("-")[1]) for r in rows)
    assert len(rows) == 40 and right >= 32  # the shipped model scores ~91 % on the test set
    # 40 images do not pay for compiling: the default stays eager, as --no-compile does
    assert "torch.compile" not in err
    code, again, err = predict(capsys, "fashion", tmp_path, "--json", "--top", "1", "--no-compile")
    assert code == 0 and again == out and "torch.compile" not in err


def test_huge_header_in_a_batch_is_skipped_fast(capsys, tmp_path, photos, small_weights):
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    code, out, err = predict(capsys, "hongong_cnn", bomb, photos["china.png"], "--weights", small_weights)
    assert code == 1 and "bomb.png: refused before decoding" in err
    assert out.splitlines()[0] == str(photos["china.png"])


def test_state_dict_with_its_own_classes_and_names(capsys, tmp_path, photos):
    path = tmp_path / "three.pth"
    torch.save(create_model("hongong_cnn", num_classes=3).state_dict(), path)
    names = tmp_path / "names.txt"
    names.write_text("sock\nshoe\nhat\n")
    argv = ["hongong_cnn", photos["china.png"], "--weights", path, "--json"]
    code, out, _ = predict(capsys, *argv, "--num-classes", "3", "--class-names", names)
    assert code == 0 and {t["class"] for t in json.loads(out)["top"]} == {"sock", "shoe", "hat"}
    code, _, err = predict(capsys, *argv)
    assert code == 2 and "num_classes=3" in err and "--num-classes" in err
    names.write_text("sock\nshoe\n")
    code, _, err = predict(capsys, *argv, "--num-classes", "3", "--class-names", names)
    assert code == 2 and "--class-names has 2 names for 3 outputs" in err
