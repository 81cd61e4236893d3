"""Segmentation data for training: FashionScenes semantic masks or a folder of image + mask PNGs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ...data.masks import MaskDataset, read_mask_folder
from ...data.scenes import FashionScenes, SceneDataset
from ...errors import UsageError

SCENE_NAMES = ("fashion-scenes", "fashion-mnist", "fashion_mnist", "fashion")

# The scenes the documented results use: 1-3 real Fashion-MNIST items of 24-48 pixels (the
# item sizes of --task detect) on a 64-pixel canvas.
DEFAULT_SCENES = FashionScenes(
    canvas=64, min_objects=1, max_objects=3, min_size=24, max_size=48, max_overlap=0.2
)
# FashionScenes parameters a run may change (the CLI's --canvas, --item-sizes, ...).
SCENE_OPTIONS = ("canvas", "min_size", "max_size", "min_objects", "max_objects", "clutter", "noise")


def scenes_with(overrides: dict[str, Any]) -> FashionScenes:
    """DEFAULT_SCENES with some SCENE_OPTIONS changed.

    Raises:
        UsageError: an option that is not in SCENE_OPTIONS, or values FashionScenes refuses.
    """
    unknown = sorted(set(overrides) - set(SCENE_OPTIONS))
    if unknown:
        raise UsageError(f"unknown scene options {unknown}; valid: {list(SCENE_OPTIONS)}")
    try:
        return DEFAULT_SCENES.replace(**overrides)
    except ValueError as exc:
        raise UsageError(f"FashionScenes: {exc}") from None


DEFAULT_SIZES = {"train": 4000, "val": 300, "test": 1000}
# FCN and U-Net: the schedule of docs/segmentation.md (more scenes beat more epochs on 4,000).
SEMANTIC_TRAIN_IMAGES = 12000


def scene_splits(
    scenes: FashionScenes = DEFAULT_SCENES,
    *,
    train_images: int = DEFAULT_SIZES["train"],
    val_images: int = DEFAULT_SIZES["val"],
    test_images: int = DEFAULT_SIZES["test"],
) -> tuple[SceneDataset, SceneDataset, SceneDataset]:
    """(train, val, test) FashionScenes, generated once and cached (see FashionScenes.load).

    The splits draw their items from disjoint Fashion-MNIST images (train, held-out train, test).
    """
    return (
        scenes.replace(split="train", num_images=train_images).load(),
        scenes.replace(split="val", num_images=val_images).load(),
        scenes.replace(split="test", num_images=test_images).load(),
    )


def load_segmentation_data(
    spec: str,
    *,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 42,
    scenes: FashionScenes = DEFAULT_SCENES,
    image_size: int | None = None,
) -> tuple[MaskDataset, MaskDataset, MaskDataset, dict[str, Any]]:
    """(train, val, test) MaskDatasets and a JSON-able description of where they came from.

    Args:
        spec: ``'fashion-scenes'`` (or ``'fashion-mnist'``, the CLI default) for FashionScenes;
            a mask folder (``images/`` + ``masks/``, see ``cnnkit.data.masks``), split 70/10/20
            with ``seed``; or a folder with ``train/`` and ``test/`` mask folders (10 % of train
            is held out for validation).
        limit_train: FashionScenes: training images to generate; folders: keep only so many.
        limit_test: the same for the test split.
        seed: seeds the folder splits.
        scenes: the FashionScenes parameters (split and size are set here).
        image_size: folders: resize every pair to this side (None: keep the files' size).

    Raises:
        UsageError: a spec that is neither a scenes name nor a folder.
        DataError: from the mask reader, naming the file and value.
    """
    if spec in SCENE_NAMES:
        train_s, val_s, test_s = scene_splits(
            scenes,
            train_images=limit_train or SEMANTIC_TRAIN_IMAGES,
            test_images=limit_test or DEFAULT_SIZES["test"],
        )
        data = [MaskDataset.from_scenes(s) for s in (train_s, val_s, test_s)]
        info = {
            "kind": "fashion-scenes",
            "scenes": {
                k: v for k, v in dataclasses.asdict(scenes).items() if k not in ("split", "num_images")
            },
            "canvas": scenes.canvas,
        }
        train, val, test = data
    else:
        folder = Path(spec)
        if not folder.is_dir():
            raise UsageError(
                f"--data for segmentation must be 'fashion-scenes' or a folder with images/ and "
                f"masks/ (or train/ and test/ such folders), got {spec!r}"
            )
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            full = read_mask_folder(folder / "train", image_size=image_size)
            test = read_mask_folder(folder / "test", class_names=full.class_names, image_size=image_size)
            train, val = full.split(0.1, seed=seed)
        else:
            full = read_mask_folder(folder, image_size=image_size)
            rest, test = full.split(0.2, seed=seed)
            train, val = rest.split(0.125, seed=seed)
        if limit_train:
            train = train.take(limit_train, seed=seed)
        if limit_test:
            test = test.take(limit_test, seed=seed)
        info = {"kind": "mask-folder", "folder": str(folder), "image_size": image_size}
    info["sizes"] = {"train": len(train), "val": len(val), "test": len(test)}
    info["input_shape"] = list(train.input_shape)
    return train, val, test, info
