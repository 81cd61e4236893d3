"""Image-folder datasets: one sub-folder per class, decoded once into memory.

::

    flowers/
      daisy/    001.jpg 002.png ...
      roses/    ...
      tulips/   ...

Class names are the sub-folder names, sorted (as torchvision's ``ImageFolder``). Files are
read with :mod:`cnnkit.data.image_io` (same limits, formats and conversions as ``predict``) and
resized once to the model's input size; the result is an :class:`ArrayDataset` of uint8
pixels, ready for the Trainer: every epoch indexes that cache, nothing is decoded twice. The
files are decoded by one worker process per free core where there are enough of them
(:mod:`cnnkit.data.decode_pool`), after checking that the cache fits in memory. A bad file is
handled by the ``on_error`` policy: ``"raise"`` stops at the first one, ``"skip"`` leaves it out
and lists every bad file at the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..text import columns, ljust
from .arrays import ArrayDataset
from .decode_pool import CACHE_MEMORY_FRACTION, check_cache_fits, parallel_map
from .image_io import ALLOWED_FORMATS, IMAGE_EXTENSIONS, MAX_FILE_BYTES, MAX_PIXELS, load_image
from .preprocess import RESIZE_MODES, _check_size, resize_image

__all__ = [
    "BadFile",
    "FolderDataset",
    "FileDecoder",
    "FolderScan",
    "class_balance",
    "format_balance",
    "load_image_folder",
    "scan_image_folder",
    "split_three_ways",
]

ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class BadFile:
    """A file that could not be used, and why (the reason starts with the file name)."""

    path: Path
    reason: str


@dataclass
class FolderScan:
    """What is in an image folder, before anything is decoded.

    Attributes:
        root: the folder.
        class_names: sub-folder names, sorted; index = label.
        samples: (file, label) pairs in a stable order.
        ignored: files that are not images by extension (or lie outside any class folder).
    """

    root: Path
    class_names: list[str]
    samples: list[tuple[Path, int]]
    ignored: list[Path] = field(default_factory=list)


@dataclass
class FolderDataset:
    """A decoded image folder.

    Attributes:
        data: uint8 images [N, C, H, W], int64 labels [N] and the class names.
        bad_files: every file left out under ``on_error="skip"`` (empty with ``"raise"``).
        ignored: files skipped for their extension or place (not images, loose files).
    """

    data: ArrayDataset
    bad_files: list[BadFile]
    ignored: list[Path]

    def report(self) -> str:
        """Counts per class, then every bad file by name (the end-of-load list)."""
        lines = [format_balance({"images": self.data})]
        if self.bad_files:
            lines.append(f"{len(self.bad_files)} bad file(s) skipped:")
            lines += [f"  {bad.reason}" for bad in self.bad_files]
        if self.ignored:
            lines.append(f"{len(self.ignored)} non-image file(s) ignored")
        return "\n".join(lines)


def scan_image_folder(
    root: str | os.PathLike[str], extensions: frozenset[str] = IMAGE_EXTENSIONS
) -> FolderScan:
    """List classes and files without decoding anything.

    Hidden files and folders (starting with ".") are not looked at. Class folders are
    walked recursively.

    Raises:
        DataError: the folder is missing, has no class sub-folders, or a class has no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected one sub-folder of images per class)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    ignored = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{root}: no class sub-folders; put the images of each class in their own folder, "
            f"e.g. {root / 'cats'} and {root / 'dogs'}"
        )
    samples: list[tuple[Path, int]] = []
    for label, folder in enumerate(class_dirs):
        found = 0
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).parts
            if any(part.startswith(".") for part in rel) or not path.is_file():
                continue
            if path.suffix.lower() in extensions:
                samples.append((path, label))
                found += 1
            else:
                ignored.append(path)
        if not found:
            raise DataError(f"{folder}: class folder has no image files ({', '.join(sorted(extensions))})")
    return FolderScan(root, [p.name for p in class_dirs], samples, ignored)


def load_image_folder(
    root: str | os.PathLike[str],
    size: int | Sequence[int],
    *,
    channels: int = 3,
    resize: str = "crop",
    on_error: str = "raise",
    background: tuple[int, int, int] = (255, 255, 255),
    fill: int | tuple[int, int, int] = 0,
    max_bytes: int = MAX_FILE_BYTES,
    max_pixels: int = MAX_PIXELS,
    formats: Sequence[str] = ALLOWED_FORMATS,
    map_files: Callable[[Sequence, Callable], Iterable] | None = None,
    memory_fraction: float = CACHE_MEMORY_FRACTION,
) -> FolderDataset:
    """Decode every image of a class-per-folder tree into memory.

    Args:
        root: folder with one sub-folder per class.
        size: stored (height, width), or one int for squares; usually the model's input.
        channels: 1 or 3.
        resize: ``"crop"``, ``"resize"`` or ``"pad"`` (see ``images.resize_image``).
        on_error: ``"raise"``: stop at the first bad file (DataError naming it);
            ``"skip"``: leave bad files out and list them all in ``bad_files``.
        background: RGB colour under transparent pixels.
        fill: ``"pad"`` margin colour.
        max_bytes: per-file size limit.
        max_pixels: per-image pixel limit.
        formats: accepted formats (subset of ``ALLOWED_FORMATS``).
        map_files: ``map_files(samples, decode)`` yields ``decode`` of every (path, label)
            sample in order (default: ``decode_pool.parallel_map``, one worker process per
            core for a large folder); data-parallel runs pass one that has each process decode
            its share (``engine.distributed.map_shared``).
        memory_fraction: the decoded images may take this share of the available memory.

    Returns:
        FolderDataset whose ``data`` has uint8 images [N, channels, H, W] (N × C × H × W
        bytes: 10,000 RGB images at 224 × 224 take 1.5 GB).

    Raises:
        DataError: layout problems (see :func:`scan_image_folder`), the first bad file with
            ``"raise"``, a class left without images after skipping, or a cache that would
            not fit in ``memory_fraction`` of the available memory (checked before decoding).
        ValueError: an unknown ``on_error`` or ``resize``, or a bad size.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    height, width = _check_size(size)
    scan = scan_image_folder(root)
    check_cache_fits(scan.root, len(scan.samples), (channels, height, width), memory_fraction)
    images = torch.empty((len(scan.samples), channels, height, width), dtype=torch.uint8)
    rows = images.numpy()  # the same memory: each image is written once, transposed to C, H, W
    labels: list[int] = []
    bad: list[BadFile] = []
    decode = FileDecoder(
        (height, width), channels, resize, background, fill, max_bytes, max_pixels, tuple(formats)
    )
    decoded = (map_files or parallel_map)(scan.samples, decode)
    try:
        for (path, label), result in zip(scan.samples, decoded):
            if isinstance(result, str):
                if on_error == "raise":
                    raise DataError(
                        f"{result} (stopped at the first bad file; --on-error skip, on_error='skip' in "
                        "Python, leaves bad files out and lists them)"
                    )
                bad.append(BadFile(path, result))
                continue
            rows[len(labels)] = result.transpose(2, 0, 1)
            labels.append(label)
    finally:  # stopped at a bad file: the worker processes stop too
        getattr(decoded, "close", lambda: None)()
    label_tensor = torch.tensor(labels, dtype=torch.int64)
    empty = [name for i, name in enumerate(scan.class_names) if not (label_tensor == i).any()]
    if empty:
        listing = "; ".join(b.reason for b in bad)
        raise DataError(
            f"{scan.root}: no usable images left in class(es) {empty} after skipping "
            f"{len(bad)} bad file(s): {listing}"
        )
    data = ArrayDataset(images[: len(labels)], label_tensor, list(scan.class_names), str(scan.root))
    return FolderDataset(data, bad, scan.ignored)


@dataclass(frozen=True)
class FileDecoder:
    """One file's pixels at the stored size, or why the file is bad (a picklable function, so
    that worker processes can run it, and every process gets through its whole share)."""

    size: tuple[int, int]
    channels: int
    resize: str
    background: tuple[int, int, int]
    fill: int | tuple[int, int, int]
    max_bytes: int
    max_pixels: int
    formats: tuple[str, ...]

    def __call__(self, sample: tuple[Path, int]) -> np.ndarray | str:
        try:
            pixels = load_image(
                sample[0],
                channels=self.channels,
                background=self.background,
                max_bytes=self.max_bytes,
                max_pixels=self.max_pixels,
                formats=self.formats,
            )
        except DataError as exc:
            return str(exc)
        return resize_image(pixels, self.size, self.resize, fill=self.fill)


def split_three_ways(
    data: ArrayDataset, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 42
) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset]:
    """Seeded, class-stratified train / validation / test split.

    Every class is shuffled with the seed and cut at the fractions (rounded per class), so
    each split keeps the class proportions; the same seed always gives the same split.

    Returns:
        (train, val, test) datasets sharing the class names.

    Raises:
        ValueError: fractions that are negative or leave no training data.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}"
        )
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[], [], []]
    for cls in torch.unique(data.labels):
        idx = torch.nonzero(data.labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = round(len(idx) * test_fraction)
        n_val = round(len(idx) * val_fraction)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    out = []
    for name, chunks in zip(("train", "val", "test"), parts):
        index = torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.long)
        index = index[torch.randperm(len(index), generator=gen)]
        out.append(data.subset(index, f"{data.name}/{name}"))
    return out[0], out[1], out[2]


def class_balance(splits: dict[str, ArrayDataset]) -> dict[str, dict[str, int]]:
    """Images per class in each split: ``{split: {class name: count}}``."""
    report = {}
    for split, data in splits.items():
        names = data.class_names or [str(i) for i in range(data.num_classes)]
        counts = torch.bincount(data.labels, minlength=len(names)).tolist()
        report[split] = dict(zip(names, counts))
    return report


def format_balance(splits: dict[str, ArrayDataset], warn_ratio: float = 3.0) -> str:
    """The class balance as a text table, with a warning line if the classes are unbalanced.

    Args:
        splits: named datasets, e.g. ``{"train": train, "val": val, "test": test}``.
        warn_ratio: warn when the largest class of a split has this many times the smallest.
    """
    counts = class_balance(splits)
    names = next(iter(counts.values())).keys() if counts else []
    width = max(columns(n) for n in ["class", *names])
    header = f"{ljust('class', width)}  " + "  ".join(f"{s:>7}" for s in counts)
    lines = [header]
    for name in names:
        lines.append(f"{ljust(name, width)}  " + "  ".join(f"{counts[s][name]:>7}" for s in counts))
    lines.append(f"{ljust('total', width)}  " + "  ".join(f"{sum(c.values()):>7}" for c in counts.values()))
    for split, per_class in counts.items():
        values = list(per_class.values())
        if values and min(values) == 0:
            empty = [n for n, v in per_class.items() if v == 0]
            lines.append(f"warning: {split} has no images of {empty}")
        elif values and max(values) / min(values) >= warn_ratio:
            lines.append(
                f"warning: {split} is unbalanced: {max(values)} vs {min(values)} images per class "
                "(consider class weights or more data for the small classes)"
            )
    return "\n".join(lines)
