"""Train / validation / test splits of an image folder, in either of the two usual layouts.

::

    shoes/                          shoes/
      train/                          boots/     001.png ...
        boots/    001.png ...         sandals/   ...
        sandals/  ...                 sneakers/  ...
      val/       (optional)
        boots/ ...                  one sub-folder per class: seeded, stratified
      test/      (optional)         train / validation / test split
        boots/ ...                  (:func:`~cnnkit.data.folders.split_three_ways`)

With ``train/`` the class list is ``train/``'s sub-folders, sorted; ``val/`` and ``test/`` must
use those names (a class of theirs missing from ``train/`` is an error naming it; a class they
lack is allowed). A missing ``val/`` or ``test/`` is a seeded, stratified share of ``train/``.
Every image is read by :func:`~cnnkit.data.folders.load_image_folder` (same formats and limits
as ``cnnkit predict``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from .arrays import ArrayDataset
from .folders import BadFile, load_image_folder, scan_image_folder, split_three_ways

__all__ = [
    "IDX_PREFIXES",
    "SPLIT_NAMES",
    "ImageSplits",
    "is_idx_folder",
    "load_image_splits",
    "scan_image_splits",
]

IDX_PREFIXES = ("train-images", "t10k-images")
SPLIT_NAMES = ("train", "val", "test")


def is_idx_folder(path: str | os.PathLike[str]) -> bool:
    """Whether a folder holds MNIST-format IDX files (``train-images*`` or ``t10k-images*``)."""
    path = Path(path)
    return path.is_dir() and any(p.is_file() and p.name.startswith(IDX_PREFIXES) for p in path.iterdir())


@dataclass
class ImageSplits:
    """The three splits of an image folder and how they were made.

    Attributes:
        train, val, test: uint8 images [N, C, H, W] sharing ``class_names``.
        layout: ``"splits"`` (``train/`` with optional ``val/``, ``test/``) or ``"classes"``
            (one sub-folder per class, split here).
        held_out: the splits cut from the training images (``[]``, ``["val"]``, ...).
        bad_files: files left out under ``on_error="skip"``.
        ignored: non-image files.
    """

    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    layout: str
    held_out: list[str]
    bad_files: list[BadFile] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return list(self.train.class_names)

    def info(self) -> dict[str, Any]:
        """JSON-ready description (for a run's config.json)."""
        return {
            "kind": "image-folder",
            "layout": self.layout,
            "held_out": list(self.held_out),
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "bad_files": [bad.reason for bad in self.bad_files],
            "ignored_files": len(self.ignored),
        }


def scan_image_splits(root: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """(layout, class names) of an image folder, checked without decoding any image.

    Raises:
        DataError: a missing folder, fewer than two class sub-folders, a class folder without
            images, or a ``val/`` / ``test/`` class that ``train/`` lacks.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected one sub-folder of images per class)")
    where = root / "train" if (root / "train").is_dir() else root
    layout = "classes" if where == root else "splits"
    classes = scan_image_folder(where).class_names
    if len(classes) < 2:  # often --data one level too deep: DATA/cats instead of DATA
        raise DataError(
            f"{where} has one class folder ({classes[0]}); a classifier needs two or more, one "
            f"sub-folder of images each (e.g. {where}/cats and {where}/dogs)"
        )
    if layout == "classes":
        return layout, classes
    for name in SPLIT_NAMES[1:]:
        folder = root / name
        if folder.is_dir():
            extra = sorted(set(scan_image_folder(folder).class_names) - set(classes))
            if extra:
                raise DataError(
                    f"{folder}: class folder(s) {extra} not in {root / 'train'} (its classes: "
                    f"{classes}); every class must have training images"
                )
    return "splits", classes


def load_image_splits(
    root: str | os.PathLike[str],
    size: int | Sequence[int],
    *,
    channels: int = 1,
    val_fraction: float = 0.2,
    test_fraction: float = 0.1,
    seed: int = 42,
    resize: str = "crop",
    on_error: str = "raise",
    map_files: Callable[[Sequence, Callable], Iterable] | None = None,
) -> ImageSplits:
    """(train, val, test) of an image folder in either layout (see the module docstring).

    Args:
        root: the folder.
        size: stored (height, width), or one int for squares.
        channels: 1 (grayscale, ITU-R 601 luma) or 3.
        val_fraction: share held out for validation: of all images with one folder per class,
            of ``train/`` when there is no ``val/``.
        test_fraction: share held out for testing, likewise (unused when ``test/`` exists).
        seed: seed of the stratified hold-outs; the same seed gives the same splits.
        resize: ``"crop"``, ``"resize"`` or ``"pad"`` (see ``images.resize_image``).
        on_error: ``"raise"`` or ``"skip"`` (see :func:`~cnnkit.data.folders.load_image_folder`).
        map_files: how the files are decoded (see :func:`~cnnkit.data.folders.load_image_folder`).

    Raises:
        DataError: a missing folder, no class sub-folders, a class without images, a bad file
            (with ``on_error="raise"``), a ``val/`` or ``test/`` class that ``train/`` lacks, or a
            class too small for the hold-outs.
        ValueError: bad fractions, size, channels or mode.
    """
    root = Path(root)
    layout, classes = scan_image_splits(root)
    kwargs: dict[str, Any] = {"channels": channels, "resize": resize, "on_error": on_error}
    kwargs["map_files"] = map_files
    if layout == "classes":
        loaded = load_image_folder(root, size, **kwargs)
        train, val, test = split_three_ways(loaded.data, val_fraction, test_fraction, seed=seed)
        _check_not_empty(root, {"train": train, "val": val, "test": test}, val_fraction, test_fraction)
        return ImageSplits(train, val, test, "classes", ["val", "test"], loaded.bad_files, loaded.ignored)

    parts: dict[str, ArrayDataset] = {}
    bad: list[BadFile] = []
    ignored: list[Path] = []
    for name in SPLIT_NAMES:
        folder = root / name
        if not folder.is_dir():
            continue
        loaded = load_image_folder(folder, size, **kwargs)
        parts[name] = _relabel(loaded.data, classes, f"{root}/{name}")
        bad += loaded.bad_files
        ignored += loaded.ignored
    held_out = [name for name in ("val", "test") if name not in parts]
    if held_out:
        train, val, test = split_three_ways(
            parts["train"],
            val_fraction if "val" in held_out else 0.0,
            test_fraction if "test" in held_out else 0.0,
            seed=seed,
        )
        parts["train"] = train.subset(slice(None), f"{root}/train")
        if "val" in held_out:
            parts["val"] = val.subset(slice(None), f"{root}/train (val share)")
        if "test" in held_out:
            parts["test"] = test.subset(slice(None), f"{root}/train (test share)")
        _check_not_empty(root, parts, val_fraction, test_fraction)
    return ImageSplits(parts["train"], parts["val"], parts["test"], "splits", held_out, bad, ignored)


def _relabel(data: ArrayDataset, classes: list[str], name: str) -> ArrayDataset:
    """``data`` with labels indexing ``classes`` (its own names are a subset of them)."""
    mapping = torch.tensor([classes.index(c) for c in data.class_names], dtype=torch.int64)
    return ArrayDataset(data.images, mapping[data.labels], list(classes), name)


def _check_not_empty(
    root: Path, parts: dict[str, ArrayDataset], val_fraction: float, test_fraction: float
) -> None:
    for name, data in parts.items():
        if len(data) == 0:
            fraction = {"val": val_fraction, "test": test_fraction}.get(name)
            how = f" (a {fraction:g} share per class rounds to none)" if fraction is not None else ""
            raise DataError(f"{root}: too few images for a {name} split{how}; add images or raise the share")
