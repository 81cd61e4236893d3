"""FashionScenes: determinism, boxes that agree with masks, bounded overlap, the npz cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_area, box_iou, masks_to_boxes

from cnnkit.data import scenes as scenes_module
from cnnkit.data.scenes import VAL_START, FashionScenes, SceneDataset
from cnnkit.errors import DataError


@pytest.fixture(scope="module")
def items(fashion):
    """300 real Fashion-MNIST training items as the pool (fast to generate from)."""
    return fashion[0].subset(slice(0, 300), "fashion-mnist/train[:300]")


MULTI = FashionScenes(num_images=24, canvas=48, min_objects=1, max_objects=3, min_size=14, max_size=28)


def test_same_parameters_give_identical_scenes(items):
    a, b = MULTI.generate(items), MULTI.generate(items)
    for field in ("images", "boxes", "labels", "offsets", "masks"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    c = MULTI.replace(seed=1).generate(items)
    assert not torch.equal(a.images, c.images)
    d = MULTI.replace(split="test").generate(items)
    assert not torch.equal(a.images, d.images), "splits must not share a random stream"
    first = MULTI.replace(num_images=5).generate(items)
    assert torch.equal(first.images, a.images[:5]) and torch.equal(first.boxes, a.boxes[: len(first.boxes)])


def test_boxes_are_the_tight_boxes_of_the_masks(items):
    data = MULTI.generate(items)
    assert len(data.boxes) == len(data.masks) > len(data)
    for i in range(len(data)):
        masks = data.instance_masks(i)
        target = data.target(i)
        assert len(masks) == len(target["boxes"])
        expected = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
        assert torch.equal(target["boxes"], expected)
        assert float(target["boxes"].min()) >= 0 and float(target["boxes"].max()) <= data.image_size[0]
        # Without noise, every visible mask pixel shows its item above the threshold.
        for mask in data.instance_masks(i, visible=True):
            assert (data.images[i, 0][mask] > MULTI.mask_threshold).all()


def test_semantic_mask_is_background_plus_class_of_the_top_object(items):
    data = MULTI.generate(items)
    for i in range(5):
        semantic = data.semantic_mask(i)
        masks = data.instance_masks(i, visible=True)
        labels = data.target(i)["labels"]
        assert torch.equal(semantic == 0, ~masks.any(0))
        for mask, label in zip(masks, labels):
            assert (semantic[mask] == label + 1).all()
    assert data.semantic_masks([0, 1]).shape == (2, 48, 48)


def test_object_counts_and_overlap_stay_in_bounds(items):
    cfg = MULTI.replace(num_images=30, max_overlap=0.1)
    data = cfg.generate(items)
    counts = data.num_objects
    assert int(counts.min()) >= 1 and int(counts.max()) <= 3
    for i in range(len(data)):
        boxes = data.target(i)["boxes"]
        if len(boxes) < 2:
            continue
        iou = box_iou(boxes, boxes)
        area = box_area(boxes)
        inter = iou * (area[:, None] + area[None]) / (1 + iou)
        smaller = torch.minimum(area[:, None], area[None])
        off_diagonal = ~torch.eye(len(boxes), dtype=torch.bool)
        assert float((inter / smaller)[off_diagonal].max()) <= 0.1 + 1e-6


def test_labels_come_from_the_item_pool(items):
    data = MULTI.generate(items)
    assert set(data.labels.tolist()) <= set(items.labels.tolist())
    assert data.class_names == items.class_names


def test_clutter_and_noise_change_pixels_but_not_annotations(items):
    clean = MULTI.generate(items)
    noisy = MULTI.replace(noise=10.0).generate(items)
    assert torch.equal(clean.boxes, noisy.boxes) and torch.equal(clean.masks, noisy.masks)
    assert not torch.equal(clean.images, noisy.images)
    cluttered = MULTI.replace(clutter=3).generate(items)
    assert len(cluttered) == len(clean)


def test_batch_targets_match_per_image_targets(items):
    data = MULTI.generate(items)
    index = torch.tensor([5, 0, 7])
    boxes, labels, batch = data.batch_targets(index)
    for pos, i in enumerate(index.tolist()):
        t = data.target(i)
        assert torch.equal(boxes[batch == pos], t["boxes"]) and torch.equal(labels[batch == pos], t["labels"])
    sub = data.subset(index)
    assert torch.equal(sub.target(1)["boxes"], data.target(0)["boxes"])
    assert torch.equal(sub.instance_masks(2), data.instance_masks(7))


def test_single_object_mode_and_its_check(items):
    single = FashionScenes(num_images=6, canvas=32, min_size=12, max_size=24).generate(items)
    boxes, labels = single.single_object()
    assert boxes.shape == (6, 4) and labels.shape == (6,)
    with pytest.raises(DataError, match=r"exactly one object per image; image \d+ has"):
        MULTI.replace(min_objects=2).generate(items).single_object()


def test_save_load_round_trip(items, tmp_path):
    data = MULTI.generate(items)
    data.save(tmp_path / "s.npz")
    back = SceneDataset.load(tmp_path / "s.npz")
    for field in ("images", "boxes", "labels", "offsets", "masks"):
        assert torch.equal(getattr(data, field), getattr(back, field))
    assert back.class_names == data.class_names and back.params == data.params
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        SceneDataset.load(tmp_path / "bad.npz")


def test_cache_is_keyed_by_parameters(items, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path))
    first = MULTI.load(items)
    files = list((tmp_path / "scenes").glob("*.npz"))
    assert len(files) == 1 and files[0].name.startswith("fashion-scenes-train-48px-24-")

    def fail(*_a, **_k):
        raise AssertionError("a cache hit must not regenerate")

    monkeypatch.setattr(scenes_module, "_generate", fail)
    assert torch.equal(MULTI.load(items).images, first.images)
    assert MULTI.cache_name(items) != MULTI.replace(noise=1.0).cache_name(items)
    assert MULTI.cache_name(items) != MULTI.cache_name(items.subset(slice(0, 299)))


def test_default_item_pools_are_disjoint(fashion, monkeypatch):
    pools = {}
    monkeypatch.setattr(scenes_module, "_generate", lambda cfg, source: pools.setdefault(cfg.split, source))
    for split in ("train", "val", "test"):
        FashionScenes(split=split, num_images=1).generate()
    assert len(pools["train"]) == VAL_START and len(pools["val"]) == 60_000 - VAL_START
    assert torch.equal(pools["val"].images[0], fashion[0].images[VAL_START])
    assert torch.equal(pools["test"].images, fashion[1].images)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"split": "dev"}, "split must be one of"),
        ({"max_size": 80}, "max_size <= canvas"),
        ({"min_objects": 3, "max_objects": 2}, r"max_objects \(2\) must be >= min_objects \(3\)"),
        ({"max_overlap": 1.5}, "1.5"),
        ({"noise": -1.0}, "-1.0"),
    ],
)
def test_bad_parameters_are_refused_with_the_value(changes, message):
    with pytest.raises(ValueError, match=message):
        FashionScenes(**changes)


def test_generator_refuses_a_colour_pool():
    from cnnkit.data import ArrayDataset

    pool = ArrayDataset(torch.zeros(4, 3, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), ["a"])
    with pytest.raises(DataError, match=r"grayscale uint8 items"):
        MULTI.generate(pool)


def test_masks_are_stored_packed(items):
    data = MULTI.generate(items)
    assert data.masks.dtype == torch.uint8 and data.masks.shape[1] == int(np.ceil(48 * 48 / 8))
