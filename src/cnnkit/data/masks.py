"""Segmentation data: images with one class index per pixel, and folders of image + mask PNGs.

A mask folder looks like this (the names pair files; extensions may differ)::

    DATA/images/0001.jpg   DATA/masks/0001.png
    DATA/images/0002.png   DATA/masks/0002.png
    DATA/classes.txt       # optional: one class name per line, index 0 first (background)

A mask is a PNG whose pixel values are class indices: a grayscale (mode ``L``, ``I;16``, ``1``)
or a palette (mode ``P``) image, where the palette only colours the indices (PASCAL VOC's
format). The value ``IGNORE_INDEX`` (255, VOC's "void") marks pixels that count for nothing.
Colour masks (RGB) are refused: their colours would need a class table to mean anything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .image_io import IMAGE_EXTENSIONS, open_image, to_array
from .paths import inside, read_lines
from .scenes import ClassImages, SceneDataset

__all__ = [
    "IGNORE_INDEX",
    "MaskDataset",
    "default_palette",
    "read_mask",
    "read_mask_folder",
    "write_mask",
]

IGNORE_INDEX = 255
# Formats that store each pixel's class index exactly (GIF: e.g. Carvana's masks; TIFF: microscopy).
_LOSSLESS_FORMATS = ("PNG", "GIF", "BMP", "TIFF")
_LOSSY_TIFF = ("jpeg", "tiff_jpeg", "webp")
_INDEX_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


@dataclass
class MaskDataset(ClassImages):
    """Images and their per-pixel class masks, held in memory.

    Attributes:
        images: uint8 Tensor[N, C, H, W] (0..255).
        masks: uint8 Tensor[N, H, W], class indices, ``ignore_index`` for pixels to ignore.
        class_names: one name per class index (index 0 is usually the background).
        name: where the data came from.
        ignore_index: the mask value that marks ignored pixels.
        files: the mask file of each image, when read from a folder (for messages).
    """

    images: torch.Tensor
    masks: torch.Tensor
    class_names: list[str]
    name: str = "masks"
    ignore_index: int = IGNORE_INDEX
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._check_images()
        expected = (len(self.images), *self.images.shape[-2:])
        if tuple(self.masks.shape) != expected:
            raise DataError(
                f"{self.name}: masks must be [N, H, W] = {list(expected)} to match the images, "
                f"got {list(self.masks.shape)}"
            )
        if not 2 <= len(self.class_names) <= 255:
            raise DataError(
                f"{self.name}: need 2..255 class names (background included), got {len(self.class_names)}"
            )
        if self.masks.dtype != torch.uint8:
            if len(self.masks) and (int(self.masks.min()) < 0 or int(self.masks.max()) > 255):
                raise DataError(f"{self.name}: mask values must be in 0..255")
            self.masks = self.masks.to(torch.uint8)
        bad = (self.masks >= len(self.class_names)) & (self.masks != self.ignore_index)
        if bool(bad.any()):
            i = int(torch.nonzero(bad.flatten(1).any(1))[0])
            value = int(self.masks[i][bad[i]][0])
            where = self.files[i] if self.files else f"image {i}"
            raise DataError(
                f"{self.name}: {where} has label {value}, but the classes are 0.."
                f"{len(self.class_names) - 1} ({', '.join(self.class_names)}) and "
                f"{self.ignore_index} means ignore"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: Sequence[int] | torch.Tensor, name: str | None = None) -> MaskDataset:
        """The images (and masks) at ``index``."""
        index = torch.as_tensor(index, dtype=torch.long)
        files = [self.files[i] for i in index.tolist()] if self.files else []
        return MaskDataset(
            self.images[index],
            self.masks[index],
            list(self.class_names),
            name or f"{self.name}[{len(index)}]",
            self.ignore_index,
            files,
        )

    def take(self, n: int, seed: int = 0) -> MaskDataset:
        """A seeded random subset of ``n`` images (all of them if ``n >= len(self)``)."""
        if n >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return self.subset(order[:n], f"{self.name}[{n}]")

    def split(self, val_fraction: float = 0.2, seed: int = 42) -> tuple[MaskDataset, MaskDataset]:
        """Seeded (train, validation) split.

        Raises:
            ValueError: ``val_fraction`` not in (0, 1), or too few images for both parts.
        """
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction!r}")
        n_val = round(len(self) * val_fraction)
        if not 0 < n_val < len(self):
            raise ValueError(
                f"{self.name}: {len(self)} images cannot be split {1 - val_fraction:.0%} / "
                f"{val_fraction:.0%}; add images"
            )
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return (
            self.subset(order[n_val:], f"{self.name}/train"),
            self.subset(order[:n_val], f"{self.name}/val"),
        )

    @classmethod
    def from_scenes(cls, scenes: SceneDataset, background: str = "background") -> MaskDataset:
        """Semantic masks of a FashionScenes ``SceneDataset``: 0 background, class + 1 for objects.

        Where objects overlap, the pixel belongs to the one drawn last (the visible one).
        """
        if not isinstance(scenes, SceneDataset):
            raise TypeError(f"from_scenes takes a SceneDataset, got {type(scenes).__name__}")
        masks = torch.zeros((len(scenes), *scenes.image_size), dtype=torch.uint8)
        for i in range(len(scenes)):
            masks[i] = scenes.semantic_mask(i).to(torch.uint8)
        return cls(scenes.images, masks, [background, *scenes.class_names], scenes.name, IGNORE_INDEX)


def default_palette(num_classes: int) -> np.ndarray:
    """uint8 [num_classes, 3]: black background, then well-separated colours (matplotlib tab20).

    Beyond 20 classes the colours repeat with a shifted brightness.
    """
    from matplotlib import colormaps

    tab = colormaps["tab20"].colors
    # Strong hues first (even entries of tab20), then their light twins.
    order = [tab[i] for i in range(0, 20, 2)] + [tab[i] for i in range(1, 20, 2)]
    colours = [(0.0, 0.0, 0.0)]
    for k in range(1, num_classes):
        r, g, b = order[(k - 1) % 20]
        shade = 1.0 - 0.3 * ((k - 1) // 20 % 3)
        colours.append((r * shade, g * shade, b * shade))
    return np.clip(np.rint(np.array(colours) * 255), 0, 255).astype(np.uint8)


def write_mask(
    path: str | os.PathLike[str], mask: torch.Tensor | np.ndarray, num_classes: int | None = None
) -> None:
    """Save a class-index mask (Tensor[H, W]) as a palette PNG (indices kept, colours for viewing).

    Args:
        path: destination ``.png``.
        mask: integer class indices 0..255.
        num_classes: colours to assign (default: largest index + 1); 255 is drawn white.
    """
    from ..io.atomic import atomic_save

    values = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
    if values.ndim != 2 or values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError(f"mask must be [H, W] with values 0..255, got shape {values.shape}")
    indices = np.ascontiguousarray(values, dtype=np.uint8)
    image = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.tobytes())
    palette = np.zeros((256, 3), dtype=np.uint8)
    count = num_classes or (int(values.max()) + 1 if values.size else 1)
    palette[: min(count, 255)] = default_palette(max(count, 2))[: min(count, 255)]
    palette[IGNORE_INDEX] = 255
    image.putpalette(palette.flatten().tolist())
    atomic_save(path, lambda tmp: image.save(tmp, format="PNG"))


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Class indices of one mask image (PNG, GIF, BMP or TIFF), read through the safe loader
    (``data.image_io``: size and pixel limits before decoding, format checked by content).

    Returns:
        uint8 array [H, W].

    Raises:
        DataError: unreadable, lossy (JPEG, WebP), a colour mask, or a value above 255; naming the
            file.
    """
    path = Path(path)
    image = open_image(path)
    lossy = image.format not in _LOSSLESS_FORMATS or (
        image.format == "TIFF" and str(image.info.get("compression", "")) in _LOSSY_TIFF
    )
    if lossy:
        kind = image.format
        if kind == "TIFF":
            kind = f"TIFF with {image.info['compression']} compression"
        raise DataError(
            f"{path}: masks must be lossless (PNG, GIF, BMP or uncompressed/LZW TIFF), got {kind}; "
            "lossy formats change class indices at edges"
        )
    mode = image.mode
    if mode not in _INDEX_MODES:
        raise DataError(
            f"{path}: mask mode {mode!r} is not a class-index image; save the class index "
            "of each pixel as a grayscale (mode L) or palette (mode P) PNG"
        )
    values = np.asarray(image)
    if values.dtype != np.uint8:
        top = int(values.max()) if values.size else 0
        if top > 255 or (values.size and int(values.min()) < 0):
            raise DataError(f"{path}: label {top} does not fit 0..255 (at most 254 classes)")
        values = values.astype(np.uint8)
    return values


def _read_class_names(folder: Path) -> list[str] | None:
    path = folder / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in read_lines(path)]
    names = [n for n in names if n]
    if len(names) < 2:
        raise DataError(f"{path}: needs at least 2 class names (background first), got {names}")
    return names


def read_mask_folder(
    folder: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> MaskDataset:
    """Read ``folder/images/*`` and their ``folder/masks/<same name>.png``.

    Args:
        folder: the folder (see the module docstring for its layout).
        class_names: the classes, index 0 first; default ``folder/classes.txt``, else
            ``"class 0"``, ``"class 1"``... up to the largest label found.
        image_size: resize every pair to this (H, W) (images bilinear, masks nearest);
            None requires all images to share one size.
        channels: 1 or 3; None: 3 if any image is in colour, else 1.
        ignore_index: the mask value of ignored pixels.

    Raises:
        DataError: a missing folder or mask, an image without a mask or a mask without an
            image, a mask whose size differs from its image's, images of different sizes
            (without ``image_size``), or a label that is not a class; naming the file and value.
    """
    folder = Path(folder)
    image_dir, mask_dir = folder / "images", folder / "masks"
    for sub in (image_dir, mask_dir):
        if not sub.is_dir():
            raise DataError(
                f"{folder} is not a mask folder: {sub.name}/ is missing (expected images/ and "
                "masks/ with files of the same names)"
            )
    images = sorted(
        inside(folder, p.relative_to(folder), f"{folder}: images/{p.name}")
        for p in image_dir.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not images:
        raise DataError(f"{image_dir} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    masks = {
        p.stem: inside(folder, p.relative_to(folder), f"{folder}: masks/{p.name}")
        for p in mask_dir.iterdir()
        if p.is_file() and not p.name.startswith(".")
    }
    stems = {p.stem for p in images}
    if len(stems) != len(images):
        raise DataError(f"{image_dir}: two images share a name (e.g. a.jpg and a.png)")
    for image_path in images:
        if image_path.stem not in masks:
            raise DataError(f"{image_path} has no mask: expected {mask_dir / image_path.stem}.png")
    orphans = sorted(set(masks) - stems)
    if orphans:
        raise DataError(f"{masks[orphans[0]]} has no image in {image_dir} ({len(orphans)} in all)")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    decoded = [open_image(p) for p in images]  # one safe decode each, kept until converted
    if channels is None:
        channels = 1 if all(image.mode in _GRAY_MODES for image in decoded) else 3
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    pixels, labels, files = [], [], []
    for image_path, opened in zip(images, decoded):
        mask_path = masks[image_path.stem]
        image = to_array(opened, channels=channels, name=str(image_path))
        mask = read_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{mask_path}: mask is {mask.shape[1]}×{mask.shape[0]} but its image "
                f"{image_path.name} is {image.shape[1]}×{image.shape[0]} (width×height)"
            )
        if size is not None:
            image, mask = _resize_pair(image, mask, size)
        elif pixels and image.shape != pixels[0].shape:
            first = pixels[0].shape
            raise DataError(
                f"{image_path}: size {image.shape[1]}×{image.shape[0]} differs from "
                f"{images[0].name} ({first[1]}×{first[0]}); pass an image size to resize all"
            )
        pixels.append(image)
        labels.append(mask)
        files.append(str(mask_path))
    names = list(class_names) if class_names is not None else _read_class_names(folder)
    if names is None:
        found = max(int(m[m != ignore_index].max(initial=0)) for m in labels)
        names = [f"class {k}" for k in range(max(found + 1, 2))]
    return MaskDataset(
        torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(np.stack(labels)),
        names,
        str(folder),
        ignore_index,
        files,
    )


def _resize_pair(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    mode = "L" if image.shape[2] == 1 else "RGB"
    pil = Image.fromarray(image[:, :, 0] if mode == "L" else image, mode=mode)
    resized = np.asarray(pil.resize((w, h), Image.BILINEAR), dtype=np.uint8)
    # Nearest neighbour: a blend of two class indices is a third, wrong class.
    labels = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST), dtype=np.uint8)
    return (resized[:, :, None] if resized.ndim == 2 else resized), labels
