"""Image + mask PNG folders: reading index and palette masks, and refusing bad ones by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.masks import (
    IGNORE_INDEX,
    MaskDataset,
    default_palette,
    read_mask,
    read_mask_folder,
    write_mask,
)
from cnnkit.data.scenes import FashionScenes
from cnnkit.errors import DataError


def _make_folder(root: Path, n: int = 4, size: tuple[int, int] = (12, 10), palette: bool = True):
    """n grayscale images with masks of classes 0..2 (odd files as palette PNGs)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    masks = []
    for i in range(n):
        h, w = size
        image = rng.integers(0, 256, (h, w), dtype=np.uint8)
        mask = rng.integers(0, 3, (h, w), dtype=np.uint8)
        mask[0, 0] = IGNORE_INDEX
        Image.fromarray(image).save(root / "images" / f"{i:03d}.png")
        if palette and i % 2:
            write_mask(root / "masks" / f"{i:03d}.png", mask, 3)
        else:
            Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
        masks.append(mask)
    (root / "classes.txt").write_text("background\ncircle\nsquare\n", encoding="utf-8")
    return np.stack(masks)


def test_reads_index_and_palette_masks(tmp_path):
    expected = _make_folder(tmp_path)
    with Image.open(tmp_path / "masks" / "001.png") as f:
        assert f.mode == "P"  # the palette file really is a palette PNG
    data = read_mask_folder(tmp_path)
    assert data.class_names == ["background", "circle", "square"]
    assert data.images.shape == (4, 1, 12, 10) and data.images.dtype == torch.uint8
    np.testing.assert_array_equal(data.masks.numpy(), expected)
    assert data.files[1].endswith("001.png")


def test_palette_indices_not_colours(tmp_path):
    mask = np.array([[0, 1], [2, IGNORE_INDEX]], dtype=np.uint8)
    write_mask(tmp_path / "m.png", mask, 3)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
    palette = default_palette(3)
    assert palette.shape == (3, 3) and (palette[0] == 0).all()


def test_size_mismatch_names_the_file(tmp_path):
    _make_folder(tmp_path)
    Image.fromarray(np.zeros((7, 10), dtype=np.uint8)).save(tmp_path / "masks" / "002.png")
    with pytest.raises(DataError, match=r"002\.png: mask is 10×7 but its image 002\.png is 10×12"):
        read_mask_folder(tmp_path)


def test_unknown_label_names_file_and_value(tmp_path):
    _make_folder(tmp_path)
    bad = np.zeros((12, 10), dtype=np.uint8)
    bad[5, 5] = 7
    Image.fromarray(bad).save(tmp_path / "masks" / "003.png")
    with pytest.raises(DataError, match=r"003\.png has label 7, but the classes are 0\.\.2"):
        read_mask_folder(tmp_path)


def test_colour_mask_refused(tmp_path):
    _make_folder(tmp_path)
    Image.new("RGB", (10, 12), (255, 0, 0)).save(tmp_path / "masks" / "000.png")
    with pytest.raises(DataError, match=r"000\.png: mask mode 'RGB' is not a class-index image"):
        read_mask_folder(tmp_path)


def test_lossy_mask_refused(tmp_path):
    _make_folder(tmp_path)
    (tmp_path / "masks" / "000.png").unlink()
    Image.new("L", (10, 12), 1).save(tmp_path / "masks" / "000.jpg")
    with pytest.raises(DataError, match=r"000\.jpg: masks must be lossless .*got JPEG"):
        read_mask_folder(tmp_path)
    (tmp_path / "masks" / "000.jpg").unlink()
    Image.new("L", (10, 12), 1).save(tmp_path / "masks" / "000.tif", compression="jpeg")
    with pytest.raises(DataError, match=r"000\.tif: masks must be lossless .*got TIFF with jpeg"):
        read_mask_folder(tmp_path)


def test_missing_mask_and_orphan_mask(tmp_path):
    _make_folder(tmp_path)
    (tmp_path / "masks" / "001.png").rename(tmp_path / "masks" / "extra.png")
    with pytest.raises(DataError, match=r"images/001\.png has no mask"):
        read_mask_folder(tmp_path)
    Image.new("L", (10, 12)).save(tmp_path / "images" / "001.png")
    Image.new("L", (10, 12)).save(tmp_path / "masks" / "001.png")
    with pytest.raises(DataError, match=r"extra\.png has no image"):
        read_mask_folder(tmp_path)


def test_mixed_sizes_need_image_size(tmp_path):
    _make_folder(tmp_path)
    Image.new("L", (16, 16), 9).save(tmp_path / "images" / "002.png")
    Image.new("L", (16, 16), 2).save(tmp_path / "masks" / "002.png")
    with pytest.raises(DataError, match=r"002\.png: size 16×16 differs"):
        read_mask_folder(tmp_path)
    data = read_mask_folder(tmp_path, image_size=8)
    assert data.images.shape == (4, 1, 8, 8)
    assert (data.masks[2] == 2).all()  # nearest neighbour keeps class indices
    assert set(data.masks.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}


def test_dataset_checks_and_split():
    images = torch.zeros(5, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(DataError, match=r"image 3 has label 4"):
        masks = torch.zeros(5, 4, 4, dtype=torch.uint8)
        masks[3, 1, 1] = 4
        MaskDataset(images, masks, ["bg", "a", "b"])
    with pytest.raises(DataError, match=r"masks must be \[N, H, W\] = \[5, 4, 4\]"):
        MaskDataset(images, torch.zeros(5, 4, 3, dtype=torch.uint8), ["bg", "a"])
    data = MaskDataset(images, torch.zeros(5, 4, 4, dtype=torch.uint8), ["bg", "a"])
    train, val = data.split(0.4, seed=0)
    assert (len(train), len(val)) == (3, 2)


def test_from_scenes_semantic_masks():
    scenes = FashionScenes(split="test", num_images=3, max_objects=3, max_size=40).generate()
    data = MaskDataset.from_scenes(scenes)
    assert data.class_names[0] == "background" and len(data.class_names) == 11
    for i in range(3):
        np.testing.assert_array_equal(data.masks[i].numpy(), scenes.semantic_mask(i).numpy())
    labels = set(data.masks.unique().tolist())
    assert 0 in labels and labels - {0} == {int(c) + 1 for c in scenes.labels.tolist()}


def test_images_in_every_suffix_predict_reads_and_lossless_masks_of_any_format(tmp_path):
    # A Windows browser saves JPEGs as .jfif; datasets such as Carvana ship their masks as GIFs.
    expected = _make_folder(tmp_path, n=3, palette=False)
    for i, suffix in ((0, ".jfif"), (1, ".gif")):
        src = tmp_path / "images" / f"{i:03d}.png"
        with Image.open(src) as f:
            options = {"format": "JPEG"} if suffix == ".jfif" else {"format": "GIF", "optimize": False}
            f.save(src.with_suffix(suffix), **options)
        src.unlink()
    for i, suffix in ((1, ".tif"), (2, ".gif")):  # LZW TIFF and GIF store indices exactly
        mask_file = tmp_path / "masks" / f"{i:03d}.png"
        with Image.open(mask_file) as f:
            # optimize=False: Pillow's GIF writer otherwise renumbers the palette (indices 0,1,2 stay)
            options = {"compression": "tiff_lzw"} if suffix == ".tif" else {"optimize": False}
            f.save(mask_file.with_suffix(suffix), **options)
        mask_file.unlink()
    data = read_mask_folder(tmp_path)
    assert [Path(f).name for f in data.files] == ["000.png", "001.tif", "002.gif"]  # the masks
    assert data.images.shape == (3, 1, 12, 10)  # .jfif, .gif and .png images all read
    np.testing.assert_array_equal(data.masks.numpy(), expected)
