"""COCO JSON and YOLO txt readers: good files read right, every malformed record is named."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.annotations import read_coco, read_yolo
from cnnkit.errors import DataError


def _image(path: Path, width: int = 40, height: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width), 200, dtype=np.uint8)).save(path)


GOOD_COCO = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 7, "file_name": "b.png", "width": 40, "height": 30},
    ],
    "categories": [{"id": 3, "name": "bag"}, {"id": 1, "name": "coat"}],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [2, 4, 10, 6]},
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [20.5, 0, 19.5, 30]},
        {"id": 12, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1},
    ],
}


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    return tmp_path


def _write_coco(folder: Path, doc: dict) -> Path:
    path = folder / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_reads_boxes_as_xyxy_and_categories_in_id_order(coco_dir):
    data = read_coco(_write_coco(coco_dir, GOOD_COCO))
    assert data.class_names == ["coat", "bag"]  # ids 1, 3 -> indices 0, 1
    first, second = data.images
    assert first.path == coco_dir / "a.png" and (first.width, first.height) == (40, 30)
    assert torch.equal(first.boxes, torch.tensor([[2.0, 4.0, 12.0, 10.0], [20.5, 0.0, 40.0, 30.0]]))
    assert first.labels.tolist() == [1, 0]
    assert len(second.boxes) == 0, "crowd annotations are skipped"


def test_coco_to_scenes_scales_boxes_with_the_image(coco_dir):
    scenes = read_coco(_write_coco(coco_dir, GOOD_COCO)).to_scenes(20)
    assert scenes.images.shape == (2, 1, 20, 20) and scenes.images.dtype == torch.uint8
    assert torch.allclose(scenes.target(0)["boxes"][0], torch.tensor([1.0, 4 * 20 / 30, 6.0, 10 * 20 / 30]))
    assert scenes.num_objects.tolist() == [2, 0] and scenes.masks is None


def _broken(change) -> dict:
    doc = copy.deepcopy(GOOD_COCO)
    change(doc)
    return doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["annotations"][1].update(bbox=[20, 0, -4, 10]),
            r"annotations\[1\] \(id=11, image_id=1\).*width -4",
        ),
        (
            lambda d: d["annotations"][0].update(bbox=[35, 4, 10, 6]),
            r"annotations\[0\] \(id=10, image_id=1\).*outside the 40x30 image",
        ),
        (
            lambda d: d["annotations"][0].update(category_id=9),
            r"annotations\[0\] \(id=10.*unknown category_id 9; the categories are \[1, 3\]",
        ),
        (lambda d: d["annotations"][0].update(image_id=99), r"annotations\[0\].*no image with id 99"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\].*four finite numbers"),
        (
            lambda d: d["images"][1].update(file_name="missing.png"),
            r"images\[1\] \(id=7, file_name='missing.png'\): image file .*missing.png is missing",
        ),
        (lambda d: d["images"][0].update(width=-40), r"images\[0\].*positive integers"),
        (lambda d: d["images"].append(dict(d["images"][0])), r"images\[2\].*appears twice"),
        (lambda d: d["categories"].append({"id": 3, "name": "x"}), r"categories\[2\].*appears twice"),
        (lambda d: d.pop("annotations"), r"needs a list under 'annotations'"),
    ],
)
def test_malformed_coco_records_are_named(coco_dir, change, message):
    path = _write_coco(coco_dir, _broken(change))
    with pytest.raises(DataError, match=message) as info:
        read_coco(path)
    assert str(path) in str(info.value)


def test_coco_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_coco(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad.json: not a readable JSON file"):
        read_coco(tmp_path / "bad.json")


@pytest.fixture
def yolo_dir(tmp_path: Path) -> Path:
    _image(tmp_path / "images" / "a.png", 40, 20)
    _image(tmp_path / "images" / "b.png", 40, 20)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n\n0 0.125 0.25 0.25 0.5\n")
    (tmp_path / "classes.txt").write_text("coat\nbag\n")
    return tmp_path


def test_yolo_reads_normalised_centres_as_pixel_boxes(yolo_dir):
    data = read_yolo(yolo_dir)
    assert data.class_names == ["coat", "bag"]
    a, b = data.images
    assert torch.equal(a.boxes, torch.tensor([[10.0, 5.0, 30.0, 15.0], [0.0, 0.0, 10.0, 10.0]]))
    assert a.labels.tolist() == [1, 0]
    assert len(b.boxes) == 0, "an image without a label file has no objects"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("5 0.5 0.5 0.2 0.2", r"a.txt:2: unknown class id 5; the classes are 0..1 \(coat, bag\)"),
        ("0 0.5 0.5 -0.2 0.2", r"a.txt:2: .*width -8 .* both must be > 0"),
        ("0 0.95 0.5 0.2 0.2", r"a.txt:2: .*outside the 40x20 image"),
        ("0 0.5 0.5 0.2", r"a.txt:2: expected 'class cx cy w h' \(5 fields\)"),
        ("zero 0.5 0.5 0.2 0.2", r"a.txt:2: expected an integer class and four numbers"),
    ],
)
def test_malformed_yolo_lines_are_named_by_file_and_line(yolo_dir, line, message):
    (yolo_dir / "labels" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n" + line + "\n")
    with pytest.raises(DataError, match=message):
        read_yolo(yolo_dir)


def test_yolo_label_without_image_and_missing_class_names(yolo_dir):
    (yolo_dir / "labels" / "c.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=r"c.txt: no image c\.\* in"):
        read_yolo(yolo_dir)
    (yolo_dir / "labels" / "c.txt").unlink()
    (yolo_dir / "classes.txt").unlink()
    with pytest.raises(DataError, match="no classes.txt"):
        read_yolo(yolo_dir)
    assert read_yolo(yolo_dir, class_names=["x", "y"]).class_names == ["x", "y"]


def test_split_is_seeded_and_disjoint(coco_dir):
    data = read_coco(_write_coco(coco_dir, GOOD_COCO))
    train, val = data.split(0.5, seed=3)
    again, _ = data.split(0.5, seed=3)
    assert [r.path for r in train.images] == [r.path for r in again.images]
    assert {r.path for r in train.images}.isdisjoint({r.path for r in val.images})
    with pytest.raises(ValueError, match="cannot be split"):
        data.split(0.1)
