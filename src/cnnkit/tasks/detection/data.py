"""The ``--data`` specs of the localization and detection tasks.

- ``fashion-scenes`` (also ``fashion-mnist``, the CLI default): generated FashionScenes, train /
  val / test from disjoint Fashion-MNIST items;
- ``coco:FILE.json`` (images relative to the file) and ``yolo:FOLDER``: your own data, split by
  image into train / val / test (70 / 10 / 20 %, seeded) and resized to the training size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ...data.annotations import AnnotationSet, read_coco, read_yolo
from ...data.scenes import FashionScenes, SceneDataset
from ...errors import UsageError

SCENE_NAMES = ("fashion-scenes", "fashion-mnist", "fashion_mnist", "fashion", "scenes")


@dataclass
class TaskData:
    """Train / validation / test scenes and where they came from.

    Attributes:
        train: training scenes.
        val: validation scenes (best-epoch choice).
        test: test scenes (reported metrics).
        record: JSON-able description saved in config.json.
    """

    train: SceneDataset
    val: SceneDataset
    test: SceneDataset
    record: dict[str, Any] = field(default_factory=dict)


def load_task_data(
    spec: str,
    *,
    image_size: int,
    in_chans: int,
    scenes: FashionScenes | None,
    num_val: int,
    num_test: int,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
) -> TaskData:
    """Resolve a ``--data`` spec.

    Args:
        spec: see the module docstring.
        image_size: side the images are resized to (FashionScenes: the canvas).
        in_chans: channels the model takes (FashionScenes is grayscale: 1).
        scenes: FashionScenes parameters of the train split (val / test copy them); only
            read for generated scenes (None is fine with COCO / YOLO data).
        num_val: validation scenes to generate.
        num_test: test scenes to generate.
        limit_train: keep only the first N training images.
        limit_test: keep only the first N validation and test images.
        seed: seed of the split of your own data.

    Raises:
        UsageError: an unknown spec, naming the valid forms.
    """
    if spec in SCENE_NAMES:
        if scenes is None:
            raise UsageError(f"--data {spec}: FashionScenes need their settings (canvas, item sizes, ...)")
        if in_chans != 1:
            raise UsageError(
                f"FashionScenes are grayscale; the model must take 1 input channel, not {in_chans}"
            )
        train_cfg = scenes.replace(split="train", num_images=_limit(scenes.num_images, limit_train))
        val_cfg = scenes.replace(split="val", num_images=_limit(num_val, limit_test))
        test_cfg = scenes.replace(split="test", num_images=_limit(num_test, limit_test))
        return TaskData(
            train_cfg.load(),
            val_cfg.load(),
            test_cfg.load(),
            {
                "name": "fashion-scenes",
                **{c.split: dataclasses.asdict(c) for c in (train_cfg, val_cfg, test_cfg)},
            },
        )
    kind, _, path = spec.partition(":")
    if kind == "coco" and path:
        annotations = read_coco(path)
    elif kind == "yolo" and path:
        annotations = read_yolo(path)
    else:
        raise UsageError(
            f"--data must be one of {', '.join(SCENE_NAMES[:2])}, coco:FILE.json or yolo:FOLDER, got {spec!r}"
        )
    rest, test = annotations.split(0.2, seed=seed)
    train, val = rest.split(0.125, seed=seed)
    if limit_train:
        train = AnnotationSet(train.images[:limit_train], train.class_names, train.source)
    if limit_test:
        val = AnnotationSet(val.images[:limit_test], val.class_names, val.source)
        test = AnnotationSet(test.images[:limit_test], test.class_names, test.source)
    return TaskData(
        train.to_scenes(image_size, in_chans),
        val.to_scenes(image_size, in_chans),
        test.to_scenes(image_size, in_chans),
        {"name": spec, "images": {"train": len(train), "val": len(val), "test": len(test)}},
    )


def _limit(n: int, limit: int | None) -> int:
    return min(n, limit) if limit else n
