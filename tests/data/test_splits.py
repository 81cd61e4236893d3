"""Image-folder splits (cnnkit.data.splits) on real Fashion-MNIST items written as PNG and JPEG."""

from __future__ import annotations

import shutil

import pytest
import torch

from cnnkit.data import load_fashion_mnist
from cnnkit.data.splits import is_idx_folder, load_image_splits, scan_image_splits
from cnnkit.errors import DataError


@pytest.fixture(scope="module")
def folders(tmp_path_factory, write_fashion_folders):
    return write_fashion_folders(tmp_path_factory.mktemp("splits"), per_class=20)


def _by_file(data, items):
    """{file name: (image, label)} of a split, using the stable scan order of the files."""
    return dict(zip(sorted(name for _, name in items), zip(data.images, data.labels.tolist())))


def test_split_layout_uses_the_folders(folders, fashion):
    splits = load_image_splits(folders["splits"], 28, channels=1)
    assert splits.layout == "splits" and splits.held_out == []
    assert [len(splits.train), len(splits.val), len(splits.test)] == [140, 20, 40]
    assert splits.class_names == sorted(splits.class_names) and splits.class_names[0] == "0_T-shirt-top"
    assert splits.info()["sizes"] == {"train": 140, "val": 20, "test": 40}
    _, test = fashion
    for split in ("train", "val", "test"):
        data = getattr(splits, split)
        assert data.images.shape[1:] == (1, 28, 28) and data.images.dtype == torch.uint8
        for name, (image, label) in _by_file(data, folders["items"][split]).items():
            index = int(name.split("/")[1][:5])
            assert label == int(test.labels[index])  # folder order = the Fashion-MNIST labels
            truth = test.images[index]
            if name.endswith(".png"):  # lossless: exactly the IDX pixels
                assert torch.equal(image, truth), name
            else:  # JPEG quality 95: close
                diff = (image.int() - truth.int()).abs().float()
                assert diff.mean() < 3.0 and diff.max() < 64, (name, diff.mean(), diff.max())


def test_png_pixels_equal_the_idx_pixels(folders):
    idx_train, _ = load_fashion_mnist(folders["idx"])
    splits = load_image_splits(folders["splits"], 28, channels=1)
    pngs = [name for _, name in folders["items"]["train"]]
    by_file = _by_file(splits.train, folders["items"]["train"])
    for k, name in enumerate(pngs):  # the IDX train file holds the train items in this order
        if name.endswith(".png"):
            assert torch.equal(by_file[name][0], idx_train.images[k])
            assert by_file[name][1] == int(idx_train.labels[k])


def test_flat_layout_is_a_seeded_stratified_split(folders):
    a = load_image_splits(folders["flat"], 28, val_fraction=0.1, test_fraction=0.2, seed=3)
    b = load_image_splits(folders["flat"], 28, val_fraction=0.1, test_fraction=0.2, seed=3)
    c = load_image_splits(folders["flat"], 28, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert a.layout == "classes" and a.held_out == ["val", "test"]
    assert [len(a.train), len(a.val), len(a.test)] == [140, 20, 40]
    assert torch.bincount(a.test.labels).tolist() == [4] * 10  # stratified
    assert torch.equal(a.test.images, b.test.images)  # same seed, same split
    assert not torch.equal(a.test.images, c.test.images)


def test_missing_val_and_test_are_held_out_of_train(folders, tmp_path):
    shutil.copytree(folders["splits"] / "train", tmp_path / "train")
    splits = load_image_splits(tmp_path, 28, val_fraction=0.25, test_fraction=0.25, seed=0)
    assert splits.held_out == ["val", "test"]
    # 14 training images per class; a quarter rounds to 4 per class (split_three_ways rounds)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [60, 40, 40]
    shutil.copytree(folders["splits"] / "test", tmp_path / "test")
    splits = load_image_splits(tmp_path, 28, val_fraction=0.25, seed=0)
    assert splits.held_out == ["val"]
    assert [len(splits.train), len(splits.val), len(splits.test)] == [100, 40, 40]


def test_size_and_channels(folders):
    splits = load_image_splits(folders["splits"], (32, 24), channels=3)
    assert splits.train.images.shape[1:] == (3, 32, 24)
    assert torch.equal(splits.train.images[:, 0], splits.train.images[:, 2])  # gray in RGB


def test_val_or_test_class_missing_from_train_is_named(folders, tmp_path):
    shutil.copytree(folders["splits"], tmp_path / "d")
    shutil.rmtree(tmp_path / "d" / "train" / "3_Dress")
    with pytest.raises(DataError, match=r"\['3_Dress'\] not in .*train"):
        scan_image_splits(tmp_path / "d")
    with pytest.raises(DataError, match="3_Dress"):
        load_image_splits(tmp_path / "d", 28)
    shutil.rmtree(tmp_path / "d" / "val" / "3_Dress")  # a class val/ lacks is fine
    shutil.rmtree(tmp_path / "d" / "test" / "3_Dress")
    assert load_image_splits(tmp_path / "d", 28).val.num_classes == 9


def test_layout_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        scan_image_splits(tmp_path / "absent")
    with pytest.raises(DataError, match="no class sub-folders"):
        scan_image_splits(tmp_path)
    (tmp_path / "cats").mkdir()
    with pytest.raises(DataError, match="has no image files"):
        scan_image_splits(tmp_path)


def test_too_few_images_for_a_split(folders, tmp_path):
    for name in ("0_T-shirt-top", "1_Trouser"):
        (tmp_path / name).mkdir()
        for file in sorted((folders["flat"] / name).glob("*.png"))[:2]:
            shutil.copy(file, tmp_path / name)
    with pytest.raises(DataError, match="too few images for a val split"):
        load_image_splits(tmp_path, 28, val_fraction=0.1, test_fraction=0.1)


def test_is_idx_folder(folders):
    assert is_idx_folder(folders["idx"])
    assert not is_idx_folder(folders["flat"]) and not is_idx_folder(folders["splits"])
