"""Image-folder datasets built from crops of the real sample photos, one bad file included."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from cnnkit.data.folders import (
    class_balance,
    format_balance,
    load_image_folder,
    scan_image_folder,
    split_three_ways,
)
from cnnkit.data.image_io import load_image
from cnnkit.data.preprocess import resize_image
from cnnkit.errors import DataError

FORMATS = [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP"), ("tif", "TIFF"), ("gif", "GIF")]


def _crops(photo: np.ndarray, n: int) -> list[np.ndarray]:
    """n different 40 × 40 crops of a real photo."""
    return [photo[10 + 17 * i : 50 + 17 * i, 30 + 23 * i : 70 + 23 * i] for i in range(n)]


@pytest.fixture()
def tree(tmp_path):
    """china/ (6 images), flower/ (6 images), both/ (3 images), plus clutter and one bad JPEG."""
    china, flower = load_sample_image("china.jpg"), load_sample_image("flower.jpg")
    root = tmp_path / "photos"
    sources = {"china": _crops(china, 6), "flower": _crops(flower, 6), "mixed": _crops(china[::-1], 3)}
    for cls, crops in sources.items():
        (root / cls).mkdir(parents=True)
        for i, crop in enumerate(crops):
            suffix, fmt = FORMATS[i % len(FORMATS)]
            Image.fromarray(np.ascontiguousarray(crop)).save(root / cls / f"{i}.{suffix}", fmt)
    (root / "china" / "notes.txt").write_text("not an image")
    (root / "china" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "README.md").write_text("loose file")
    good = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(sources["flower"][0])).save(good, "JPEG")
    bad = root / "flower" / "broken.jpg"
    bad.write_bytes(good.getvalue()[:300])
    return root, bad


def test_scan_lists_classes_and_ignores_clutter(tree):
    root, bad = tree
    scan = scan_image_folder(root)
    assert scan.class_names == ["china", "flower", "mixed"]
    assert len(scan.samples) == 6 + 7 + 3
    assert (bad, 1) in scan.samples
    assert sorted(p.name for p in scan.ignored) == ["README.md", "notes.txt"]


def test_raise_policy_stops_at_the_bad_file(tree):
    root, bad = tree
    with pytest.raises(DataError, match="broken.jpg: truncated or corrupt JPEG") as info:
        load_image_folder(root, 32, on_error="raise")
    assert str(bad) in str(info.value) and "on_error='skip'" in str(info.value)


def test_skip_policy_lists_every_bad_file(tree):
    root, bad = tree
    extra_bad = root / "china" / "zero.png"
    extra_bad.write_bytes(b"")
    result = load_image_folder(root, (24, 32), on_error="skip")
    data = result.data
    assert data.images.dtype == torch.uint8 and tuple(data.images.shape) == (15, 3, 24, 32)
    assert torch.bincount(data.labels).tolist() == [6, 6, 3]
    assert sorted(b.path for b in result.bad_files) == sorted([bad, extra_bad])
    report = result.report()
    assert str(bad) in report and str(extra_bad) in report and "2 bad file(s) skipped" in report
    # Every stored image is exactly what the shared loader + resize give for its file.
    scan = scan_image_folder(root)
    good = [p for p, _ in scan.samples if p not in (bad, extra_bad)]
    expected = resize_image(load_image(good[0]), (24, 32), "crop")
    np.testing.assert_array_equal(data.images[0].permute(1, 2, 0).numpy(), expected)


def test_grayscale_and_pad(tree):
    root, _ = tree
    result = load_image_folder(root, 28, channels=1, resize="pad", on_error="skip")
    assert tuple(result.data.images.shape[1:]) == (1, 28, 28)


def test_class_with_only_bad_files_is_an_error(tree):
    root, _ = tree
    for path in (root / "mixed").iterdir():
        path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"no usable images left in class\(es\) \['mixed'\]"):
        load_image_folder(root, 16, on_error="skip")


def test_layout_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        scan_image_folder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"x")
    with pytest.raises(DataError, match="no class sub-folders"):
        scan_image_folder(tmp_path / "flat")
    (tmp_path / "flat" / "cats").mkdir()
    with pytest.raises(DataError, match="cats: class folder has no image files"):
        scan_image_folder(tmp_path / "flat")
    with pytest.raises(ValueError, match="on_error must be one of"):
        load_image_folder(tmp_path, 8, on_error="ignore")


def test_seeded_stratified_three_way_split(tree):
    root, _ = tree
    data = load_image_folder(root, 16, on_error="skip").data
    train, val, test = split_three_ways(data, val_fraction=1 / 3, test_fraction=1 / 3, seed=7)
    again = split_three_ways(data, val_fraction=1 / 3, test_fraction=1 / 3, seed=7)
    for a, b in zip((train, val, test), again):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    other = split_three_ways(data, val_fraction=1 / 3, test_fraction=1 / 3, seed=8)
    assert not torch.equal(train.images, other[0].images)
    counts = class_balance({"train": train, "val": val, "test": test})
    assert counts["train"] == {"china": 2, "flower": 2, "mixed": 1}
    assert counts["val"] == {"china": 2, "flower": 2, "mixed": 1}
    assert counts["test"] == {"china": 2, "flower": 2, "mixed": 1}
    # Disjoint and complete: every image lands in exactly one split.
    rows = [img.flatten().tolist() for part in (train, val, test) for img in part.images]
    assert len(rows) == len(data) and len({tuple(r) for r in rows}) == len(data)
    with pytest.raises(ValueError, match="must be below 1"):
        split_three_ways(data, 0.5, 0.5)


def test_balance_report_warns_when_unbalanced(tree):
    root, _ = tree
    data = load_image_folder(root, 16, on_error="skip").data
    text = format_balance({"all": data}, warn_ratio=2.0)
    assert "china" in text and "total" in text and "warning: all is unbalanced: 6 vs 3" in text
    assert "warning" not in format_balance({"all": data}, warn_ratio=3.0)
