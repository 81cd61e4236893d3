"""F4-F8 and F12: hostile or broken data files are refused at load, one line naming the file, the
entry and the fix; masks, YOLO and COCO images go through the one safe loader; data paths stay in
the dataset folder; nothing trains on data that cannot be used."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.cli.__main__ import main
from cnnkit.data import write_idx
from cnnkit.data.annotations import read_coco, read_yolo
from cnnkit.data.idx import read_idx_pair
from cnnkit.data.masks import read_mask, read_mask_folder
from cnnkit.errors import DataError
from cnnkit.runs.train import train_run

from .conftest import tiny_config


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares width x height 8-bit gray (its pixel data is one row): the
    kind of file that decodes to gigabytes if a reader trusts it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = _chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + pixels + _chunk(b"IEND", b"")


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
PPM = b"P5\n4 4\n255\n" + bytes(16)
SGI = struct.pack(">hbbHHHH", 474, 0, 1, 2, 4, 4, 1) + bytes(512 - 12) + bytes(16)


def _gray_png(path: Path, width: int = 8, height: int = 6, value: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width), value, dtype=np.uint8)).save(path)


def _mask_folder(root: Path, mask_bytes: bytes | None = None) -> Path:
    for name in ("a", "b"):
        _gray_png(root / "images" / f"{name}.png", value=120)
        _gray_png(root / "masks" / f"{name}.png", value=1)
    if mask_bytes is not None:
        (root / "masks" / "b.png").write_bytes(mask_bytes)
    return root


# ------------------------------------------------------------------ F4: one door for every image
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (png_header_only(30000, 30000), "decompression-bomb check"),
        (png_header_only(13000, 13000), "decompression-bomb check"),  # 169 Mpx from a few bytes
        (png_header_only(9000, 9000), "over the 64,000,000-pixel limit"),
        (EPS, "EPS/PostScript"),
        (PPM, "is not a JPEG, PNG"),
        (SGI, "is not a JPEG, PNG"),
    ],
    ids=["bomb-30000", "bomb-13000", "over-cap-9000", "eps", "ppm", "sgi"],
)
def test_masks_and_yolo_images_go_through_the_safe_loader(tmp_path, content, reason):
    masks = _mask_folder(tmp_path / "masks", content)
    with pytest.raises(DataError, match=reason) as info:
        read_mask_folder(masks)
    assert str(info.value).startswith(str(masks / "masks" / "b.png"))

    yolo = tmp_path / "yolo"
    _gray_png(yolo / "images" / "a.png")
    (yolo / "images" / "b.png").write_bytes(content)
    (yolo / "classes.txt").write_text("thing\n")
    with pytest.raises(DataError, match=reason) as info:
        read_yolo(yolo)
    assert str(info.value).startswith(str(yolo / "images" / "b.png"))


def test_the_eps_plugin_is_never_reached(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    def ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was called")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", ghostscript)
    (tmp_path / "m.png").write_bytes(EPS)
    with pytest.raises(DataError, match="EPS/PostScript"):
        read_mask(tmp_path / "m.png")


def test_a_mask_bomb_in_cnnkit_train_segment_is_one_line_exit_2(tmp_path, capsys):
    data = _mask_folder(tmp_path / "data", png_header_only(30000, 30000))
    assert (
        main(["train", "segment", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "out")]) == 2
    )
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("cnnkit: error")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert str(data / "masks" / "b.png") in errors[0] and "decompression-bomb" in errors[0]
    assert not (tmp_path / "out" / "last.ckpt").exists()


# ------------------------------------------------------------------ F5, F6: refused at load
def _idx_folder(root: Path, train_images, train_labels, test_images, test_labels) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / "train-images-idx3-ubyte", train_images)
    write_idx(root / "train-labels-idx1-ubyte", train_labels)
    write_idx(root / "t10k-images-idx3-ubyte", test_images)
    write_idx(root / "t10k-labels-idx1-ubyte", test_labels)
    return root


def _pixels(n: int, side: int = 28) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, side, side), dtype=np.uint8)


def test_an_empty_test_set_is_refused_before_any_training(tmp_path, capsys):
    labels = (np.arange(100) % 10).astype(np.uint8)
    data = _idx_folder(tmp_path / "d", _pixels(100), labels, _pixels(0), np.zeros(0, np.uint8))
    with pytest.raises(DataError, match=r"the test split is empty"):
        train_run(tiny_config(data, epochs=1), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "last.ckpt").exists()
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "cli")]) == 2
    assert f"cnnkit: error: {data}: the test split is empty" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [np.nan, 1.5], ids=["nan", "fraction"])
def test_float_idx_labels_are_refused(tmp_path, bad):
    labels = (np.arange(20) % 10).astype(np.float32)
    labels[3] = bad
    write_idx(tmp_path / "images", _pixels(20))
    write_idx(tmp_path / "labels", labels)
    with pytest.raises(DataError, match=r"labels are float32 numbers; class labels must be an int") as info:
        read_idx_pair(tmp_path / "images", tmp_path / "labels")
    assert str(info.value).startswith(str(tmp_path / "labels"))


@pytest.mark.parametrize("side", [0, 1])
def test_degenerate_idx_images_are_refused_naming_the_file(tmp_path, side):
    write_idx(tmp_path / "images", np.zeros((5, side, side), np.uint8))
    write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match=rf"images are {side}x{side} pixels") as info:
        read_idx_pair(tmp_path / "images", tmp_path / "labels")
    assert str(info.value).startswith(str(tmp_path / "images"))


def test_images_the_model_cannot_take_are_refused_before_training(tmp_path):
    labels = (np.arange(100) % 10).astype(np.uint8)
    data = _idx_folder(tmp_path / "d", _pixels(100, 3), labels, _pixels(20, 3), labels[:20])
    with pytest.raises(DataError, match=r"its 3x3x1 images do not fit hongong_cnn"):
        train_run(tiny_config(data, epochs=1), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "last.ckpt").exists()


def test_a_model_with_a_28x28_variant_names_small_input_as_the_fix(tmp_path):
    """LeNet-5 takes 32x32 (MNIST padded); on 28x28 images its third convolution has no room."""
    labels = (np.arange(100) % 10).astype(np.uint8)
    data = _idx_folder(tmp_path / "d", _pixels(100), labels, _pixels(20), labels[:20])
    message = r"its 28x28x1 images do not fit lenet5 \(.*\); lenet5 takes 32x32x1: add --small-input"
    with pytest.raises(DataError, match=message):
        train_run(tiny_config(data, epochs=1, model="lenet5"), tmp_path / "out", progress=False)
    small = tiny_config(data, epochs=1, model="lenet5", model_kwargs={"small_input": True})
    train_run(small, tmp_path / "small", progress=False)  # the fix it names trains
    record = json.loads((tmp_path / "small" / "config.json").read_text(encoding="utf-8"))
    assert record["input_shape"] == [1, 28, 28] and record["run"]["model_kwargs"] == {"small_input": True}


# ------------------------------------------------------------------ F7, F8: COCO paths and sizes
def _coco(folder: Path, file_name: str, width: int = 64, height: int = 48, box=(2, 2, 10, 10)) -> Path:
    doc = {
        "images": [{"id": 1, "file_name": file_name, "width": width, "height": height}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": list(box)}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = folder / "instances.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "../other/images/001.png"])
def test_coco_file_names_cannot_leave_the_dataset_folder(tmp_path, name):
    _gray_png(tmp_path / "other" / "images" / "001.png", 64, 48)
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DataError, match="leads outside the dataset folder") as info:
        read_coco(_coco(root, name))
    assert repr(name) in str(info.value) and "root:" not in str(info.value)


def test_links_out_of_the_dataset_folder_are_refused(tmp_path):
    _gray_png(tmp_path / "outside.png", 64, 48)
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(tmp_path / "outside.png", root / "inside.png")
    with pytest.raises(DataError, match="leads outside"):
        read_coco(_coco(root, "inside.png"))
    masks = _mask_folder(tmp_path / "masks")
    (masks / "images" / "b.png").unlink()
    os.symlink(tmp_path / "outside.png", masks / "images" / "b.png")
    with pytest.raises(DataError, match="leads outside"):
        read_mask_folder(masks)


def test_coco_declared_size_must_be_the_images(tmp_path):
    _gray_png(tmp_path / "a.png", 64, 48)
    with pytest.raises(DataError, match=r"declares 6400x4800 but the image is 64x48"):
        read_coco(_coco(tmp_path, "a.png", 6400, 4800, box=(3000, 3000, 100, 100)))
    assert read_coco(_coco(tmp_path, "a.png", 64, 48)).images[0].width == 64


# ------------------------------------------------------------------ F12: text that is not text
def test_deeply_nested_coco_json_names_the_file(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(DataError, match="nested too deeply") as info:
        read_coco(path)
    assert str(info.value).startswith(str(path))


def test_non_utf8_yolo_files_are_named(tmp_path):
    _gray_png(tmp_path / "images" / "a.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "classes.txt").write_text("thing\n")
    (tmp_path / "labels" / "a.txt").write_bytes(b"0 0.5 0.5 0.2 \xff\xfe\n")
    with pytest.raises(DataError, match="not UTF-8 text") as info:
        read_yolo(tmp_path)
    assert str(info.value).startswith(str(tmp_path / "labels" / "a.txt"))
    (tmp_path / "classes.txt").write_bytes(b"\xff\xfething\n")
    with pytest.raises(DataError, match="not UTF-8 text") as info:
        read_yolo(tmp_path)
    assert str(info.value).startswith(str(tmp_path / "classes.txt"))
