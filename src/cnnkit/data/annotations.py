"""Box annotations from your own data: COCO JSON files and YOLO txt folders.

Both readers check every record and stop at the first bad one with a DataError that names the
file, the record and the fix: a box with zero or negative size, a box outside its image, an
unknown class, a missing image, a malformed line. Boxes come out as ``xyxy`` pixels, classes as
contiguous indices 0..C-1 with their names.

COCO: ``{"images": [{id, file_name, width, height}], "annotations": [{id, image_id,
category_id, bbox: [x, y, w, h]}], "categories": [{id, name}]}``; image files are looked up
relative to ``image_root`` (default: the JSON file's folder) and must stay inside it; the declared
``width`` and ``height`` must be the image's. Crowd annotations (``iscrowd: 1``)
are skipped, as torchvision's detection references do.

YOLO: ``FOLDER/images/NAME.png`` with ``FOLDER/labels/NAME.txt`` holding one
``class cx cy w h`` line per object (centre and size as fractions of the image), class names in
``FOLDER/classes.txt`` (one per line) unless given. An image without a label file has no objects.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .image_io import IMAGE_EXTENSIONS, image_size, load_image
from .paths import inside, read_lines
from .preprocess import resize_image
from .scenes import SceneDataset

# Annotation tools round coordinates; a box may poke this far (pixels) past the border and is
# clipped instead of rejected.
BORDER_TOLERANCE = 0.5


@dataclass
class AnnotatedImage:
    """One image file and its objects.

    Attributes:
        path: the image file.
        width: image width in pixels.
        height: image height in pixels.
        boxes: float32 Tensor[K, 4], ``xyxy`` pixels.
        labels: int64 Tensor[K], class indices.
    """

    path: Path
    width: int
    height: int
    boxes: torch.Tensor
    labels: torch.Tensor


@dataclass
class AnnotationSet:
    """Annotated images with their class names, as read from COCO or YOLO files.

    Attributes:
        images: one entry per image.
        class_names: one name per class index.
        source: the file or folder read.
    """

    images: list[AnnotatedImage]
    class_names: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.images)

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple[AnnotationSet, AnnotationSet]:
        """Seeded (train, validation) split by image.

        Raises:
            ValueError: ``val_fraction`` not in (0, 1), or too few images for two parts.
        """
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction!r}")
        n_val = round(len(self.images) * val_fraction)
        if n_val < 1 or n_val >= len(self.images):
            raise ValueError(
                f"{self.source}: {len(self.images)} images cannot be split with val_fraction "
                f"{val_fraction}; annotate more images or give a separate validation set"
            )
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed)).tolist()
        pick = [self.images[i] for i in order]
        return (
            AnnotationSet(pick[n_val:], list(self.class_names), f"{self.source}/train"),
            AnnotationSet(pick[:n_val], list(self.class_names), f"{self.source}/val"),
        )

    def to_scenes(self, size: int, in_chans: int = 1) -> SceneDataset:
        """Load every image, resized to ``size`` × ``size``, with its boxes scaled to match.

        Images are stretched, not letterboxed, so that a model sees them as ``cnnkit detect``
        does.

        Args:
            size: side of the square images the model is trained on.
            in_chans: 1 (grayscale) or 3 (RGB).

        Returns:
            SceneDataset with uint8 images [N, in_chans, size, size] and no masks.
        """
        images = torch.zeros(len(self.images), in_chans, size, size, dtype=torch.uint8)
        boxes, labels, counts = [], [], []
        for i, record in enumerate(self.images):
            images[i] = torch.from_numpy(resize_for_model(read_image(record.path, in_chans), size))
            scale = torch.tensor([size / record.width, size / record.height] * 2)
            boxes.append(record.boxes * scale)
            labels.append(record.labels)
            counts.append(len(record.boxes))
        offsets = torch.tensor([0, *np.cumsum(counts).tolist()], dtype=torch.long)
        return SceneDataset(
            images,
            torch.cat(boxes) if boxes else torch.zeros(0, 4),
            torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
            offsets,
            list(self.class_names),
            None,
            self.source,
        )


def read_image(path: str | os.PathLike[str], in_chans: int = 1) -> np.ndarray:
    """An image file as uint8 array [in_chans, H, W] (grayscale for 1 channel, RGB for 3).

    Raises:
        DataError: missing or unreadable file (cnnkit's safe loader, ``data.image_io``).
    """
    if in_chans not in (1, 3):
        raise DataError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans!r}")
    return load_image(path, channels=in_chans).transpose(2, 0, 1).copy()


def resize_for_model(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [C, H, W] -> uint8 [C, size, size], stretched (bilinear, antialiased when shrinking)."""
    resized = resize_image(np.ascontiguousarray(image.transpose(1, 2, 0)), size, mode="resize")
    return resized.transpose(2, 0, 1).copy()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _check_box(
    box: Sequence[float], width: int, height: int, where: str, fix: str
) -> tuple[float, float, float, float]:
    """Validate an ``xyxy`` pixel box against its image; returns it clipped to the border."""
    x1, y1, x2, y2 = box
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise DataError(
            f"{where}: box has width {x2 - x1:g} and height {y2 - y1:g}; both must be > 0 ({fix})"
        )
    tol = BORDER_TOLERANCE
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        raise DataError(
            f"{where}: box x1={x1:g} y1={y1:g} x2={x2:g} y2={y2:g} lies outside the "
            f"{width}x{height} image ({fix})"
        )
    return max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))


def read_coco(
    path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None
) -> AnnotationSet:
    """Read and check a COCO detection JSON file.

    Category ids may be any integers; they become indices 0..C-1 in increasing id order.

    Args:
        path: the JSON file.
        image_root: folder the ``file_name`` entries are relative to (default: the file's folder).

    Raises:
        DataError: the first malformed record, named by its list, index and id.
    """
    # Read with json, not pycocotools.COCO: that one prints to stdout and checks nothing.
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"COCO file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON file: {exc}") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be a COCO file") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: a COCO file is a JSON object, got {type(doc).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DataError(f"{path}: a COCO file needs a list under {key!r}")

    categories: dict[int, str] = {}
    for i, cat in enumerate(doc["categories"]):
        where = f"{path}: categories[{i}]"
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise DataError(f"{where} must have an integer 'id' and a string 'name', got {cat!r}")
        if cat["id"] in categories:
            raise DataError(f"{where}: category id {cat['id']} appears twice")
        categories[cat["id"]] = cat["name"]
    if not categories:
        raise DataError(f"{path}: 'categories' is empty; a detector needs at least one class")
    cat_index = {cat_id: k for k, cat_id in enumerate(sorted(categories))}

    records: dict[int, AnnotatedImage] = {}
    boxes: dict[int, list[tuple[float, float, float, float]]] = {}
    labels: dict[int, list[int]] = {}
    for i, img in enumerate(doc["images"]):
        where = f"{path}: images[{i}]"
        if (
            not isinstance(img, dict)
            or not _is_int(img.get("id"))
            or not isinstance(img.get("file_name"), str)
        ):
            raise DataError(f"{where} must have an integer 'id' and a string 'file_name', got {img!r}")
        where = f"{path}: images[{i}] (id={img['id']}, file_name={img['file_name']!r})"
        if img["id"] in records:
            raise DataError(f"{where}: image id {img['id']} appears twice")
        width, height = img.get("width"), img.get("height")
        if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
            raise DataError(
                f"{where}: width and height must be positive integers, got {width!r} x {height!r}"
            )
        file = inside(root, img["file_name"], where)
        if not file.is_file():
            raise DataError(f"{where}: image file {file} is missing (set image_root to the images folder?)")
        try:
            real = image_size(file)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        if real != (width, height):
            raise DataError(
                f"{where}: declares {width}x{height} but the image is {real[0]}x{real[1]} "
                "(width x height); fix 'width' and 'height' or the file"
            )
        records[img["id"]] = AnnotatedImage(
            file, width, height, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
        )
        boxes[img["id"]], labels[img["id"]] = [], []

    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotations[{i}] must be an object, got {ann!r}")
        where = f"{path}: annotations[{i}] (id={ann.get('id')!r}, image_id={ann.get('image_id')!r})"
        if ann.get("iscrowd", 0):
            continue
        if ann.get("image_id") not in records:
            raise DataError(f"{where}: no image with id {ann.get('image_id')!r} in 'images'")
        if ann.get("category_id") not in cat_index:
            raise DataError(
                f"{where}: unknown category_id {ann.get('category_id')!r}; the categories are "
                f"{sorted(categories)}"
            )
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise DataError(f"{where}: bbox must be four finite numbers [x, y, width, height], got {bbox!r}")
        record = records[ann["image_id"]]
        x, y, w, h = (float(v) for v in bbox)
        box = _check_box(
            (x, y, x + w, y + h),
            record.width,
            record.height,
            f"{where}: bbox {bbox}",
            "COCO boxes are [x, y, width, height] in pixels inside the image",
        )
        boxes[ann["image_id"]].append(box)
        labels[ann["image_id"]].append(cat_index[ann["category_id"]])

    for image_id, record in records.items():
        record.boxes = torch.tensor(boxes[image_id], dtype=torch.float32).reshape(-1, 4)
        record.labels = torch.tensor(labels[image_id], dtype=torch.long)
    names = [categories[cat_id] for cat_id in sorted(categories)]
    return AnnotationSet(list(records.values()), names, str(path))


def read_yolo(folder: str | os.PathLike[str], class_names: Sequence[str] | None = None) -> AnnotationSet:
    """Read and check a YOLO folder (``images/``, ``labels/``, ``classes.txt``).

    Args:
        folder: the dataset folder.
        class_names: names of classes 0..C-1; default: the lines of ``FOLDER/classes.txt``.

    Raises:
        DataError: the first malformed file or line, named by file and line number.
    """
    folder = Path(folder)
    image_dir, label_dir = folder / "images", folder / "labels"
    if not image_dir.is_dir():
        raise DataError(f"{folder}: a YOLO folder needs an images/ subfolder (and labels/)")
    if class_names is None:
        names_file = folder / "classes.txt"
        if not names_file.is_file():
            raise DataError(f"{folder}: no classes.txt; write one class name per line or pass class_names")
        class_names = [line.strip() for line in read_lines(names_file) if line.strip()]
    names = list(class_names)
    if not names:
        raise DataError(f"{folder}: the class list is empty")

    images = {
        p.stem: inside(folder, p.relative_to(folder), f"{folder}: images/{p.name}")
        for p in sorted(image_dir.iterdir())
        if p.suffix.lower() in IMAGE_EXTENSIONS
    }
    label_files = sorted(label_dir.glob("*.txt")) if label_dir.is_dir() else []
    for label_file in label_files:
        if label_file.stem not in images:
            raise DataError(
                f"{label_file}: no image {label_file.stem}.* in {image_dir} "
                f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
    records = []
    for stem, image_path in images.items():
        width, height = image_size(image_path)
        label_file = label_dir / f"{stem}.txt"
        boxes: list[tuple[float, float, float, float]] = []
        labels: list[int] = []
        if label_file.is_file():
            lines = read_lines(inside(folder, label_file.relative_to(folder), str(label_file)))
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                box, label = _parse_yolo_line(line, f"{label_file}:{number}", names, width, height)
                boxes.append(box)
                labels.append(label)
        records.append(
            AnnotatedImage(
                image_path,
                width,
                height,
                torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                torch.tensor(labels, dtype=torch.long),
            )
        )
    if not records:
        raise DataError(f"{image_dir} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return AnnotationSet(records, names, str(folder))


def _parse_yolo_line(
    line: str, where: str, names: list[str], width: int, height: int
) -> tuple[tuple[float, float, float, float], int]:
    fields = line.split()
    if len(fields) != 5:
        raise DataError(f"{where}: expected 'class cx cy w h' (5 fields), got {line.strip()!r}")
    try:
        label = int(fields[0])
        cx, cy, w, h = (float(v) for v in fields[1:])
    except ValueError:
        raise DataError(
            f"{where}: expected an integer class and four numbers, got {line.strip()!r}"
        ) from None
    if not 0 <= label < len(names):
        raise DataError(
            f"{where}: unknown class id {label}; the classes are 0..{len(names) - 1} ({', '.join(names)})"
        )
    if not all(math.isfinite(v) for v in (cx, cy, w, h)):
        raise DataError(f"{where}: coordinates must be finite, got {line.strip()!r}")
    box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
    fix = "YOLO boxes are centre x, centre y, width, height as fractions 0..1 of the image"
    return _check_box(box, width, height, f"{where}: {line.strip()!r}", fix), label
