"""Decoded pixels to model inputs: resizing, Fashion-MNIST styling and per-model normalisation.

Preparing (``resize_image`` / ``Preprocess``): three resize modes, ``"resize"`` (stretch to the
size), ``"crop"`` (aspect-preserving centre crop, then resize) and ``"pad"`` (letterbox: fit
inside, fill the rest); per-model normalisation (torchvision mean/std, Keras "caffe" BGR mean
subtraction, "tf" [-1, 1], or plain [0, 1]); grayscale and RGB adapted to the model's channels.

Files are read with :mod:`cnnkit.data.image_io` (same limits, formats and conversions).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .image_io import MAX_FILE_BYTES, MAX_PIXELS, _check_limits, _luma, load_image, to_array

if TYPE_CHECKING:  # torch is imported where tensors are made: cnnkit.runtime uses this without it
    import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATIONS",
    "RESIZE_MODES",
    "Preprocess",
    "fashion_mnist_style",
    "resize_frame",
    "resize_image",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("resize", "crop", "pad")
# name -> (scale, mean, std, channel order); the tensor is ((x * scale)[order] - mean) / std.
NORMALIZATIONS: dict[str, tuple[float, tuple[float, ...], tuple[float, ...], str]] = {
    "imagenet": (1 / 255, IMAGENET_MEAN, IMAGENET_STD, "RGB"),  # torchvision's published weights
    # keras.applications.resnet50.preprocess_input: BGR, ImageNet mean subtracted, no scaling
    "caffe": (1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), "BGR"),
    "tf": (1 / 255, (0.5,), (0.5,), "RGB"),  # Keras mode "tf": x / 127.5 - 1
    "unit": (1 / 255, (0.0,), (1.0,), "RGB"),  # x / 255, as the course's Fashion-MNIST CNNs
}
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def _check_pixels(pixels: np.ndarray) -> None:
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"expected uint8 pixels [H, W, 1 or 3], got {pixels.dtype} {pixels.shape}")


def _as_pil(pixels: np.ndarray) -> Image.Image:
    _check_pixels(pixels)
    return Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)


def _check_size(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"size must be an int or (height, width) of positive ints, got {size!r}")
    return pair  # type: ignore[return-value]


def resize_image(
    pixels: np.ndarray,
    size: int | Sequence[int],
    mode: str = "crop",
    *,
    crop_fraction: float = 1.0,
    fill: int | tuple[int, int, int] = 0,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Resize 8-bit pixels to ``size`` in one of the three modes.

    Args:
        pixels: uint8 [H, W, C] with C = 1 or 3.
        size: output (height, width), or one int for a square.
        mode: ``"resize"`` stretches to ``size`` (aspect ratio lost, nothing cut);
            ``"crop"`` cuts the largest centred box with the output's aspect ratio, then
            resizes it; ``"pad"`` fits the whole image inside and fills the margins (letterbox).
        crop_fraction: ``"crop"`` only: keep this central fraction of that box. torchvision's
            "resize to 256, centre-crop 224" is ``crop_fraction=224/256``.
        fill: gray level or RGB colour of the ``"pad"`` margins.
        interpolation: ``"bilinear"`` (torchvision's default), ``"bicubic"``, ``"lanczos"``,
            ``"box"`` or ``"nearest"``. Downscaling is antialiased (Pillow filters by the scale).

    Returns:
        uint8 [height, width, C].

    Raises:
        ValueError: an unknown mode or interpolation, a bad size, fraction or fill.
    """
    height, width = _check_size(size)
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if interpolation not in _RESAMPLE:
        raise ValueError(f"interpolation must be one of {list(_RESAMPLE)}, got {interpolation!r}")
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}")
    resample = _RESAMPLE[interpolation]
    _check_pixels(pixels)
    if mode == "pad":
        _fill_color(fill, pixels.shape[2])  # a bad fill is refused whatever the image's size
    if pixels.shape[:2] == (height, width) and crop_fraction == 1.0:
        # Already the size: every mode keeps the whole image as it is (Pillow would copy it).
        return np.ascontiguousarray(pixels)
    image = _as_pil(pixels)
    src_w, src_h = image.size
    if mode == "resize":
        out = image.resize((width, height), resample)
    elif mode == "crop":
        target = width / height
        box_w, box_h = (src_h * target, src_h) if src_w / src_h > target else (src_w, src_w / target)
        box_w, box_h = box_w * crop_fraction, box_h * crop_fraction
        left, top = (src_w - box_w) / 2, (src_h - box_h) / 2
        out = image.resize((width, height), resample, box=(left, top, left + box_w, top + box_h))
    else:
        scale = min(width / src_w, height / src_h)
        new_w = min(width, max(1, round(src_w * scale)))
        new_h = min(height, max(1, round(src_h * scale)))
        channels = pixels.shape[2]
        color = _fill_color(fill, channels)
        out = Image.new(image.mode, (width, height), color)
        out.paste(image.resize((new_w, new_h), resample), ((width - new_w) // 2, (height - new_h) // 2))
    array = np.asarray(out)
    return np.ascontiguousarray(array[..., None] if array.ndim == 2 else array)


def resize_frame(
    source: Sequence[int], size: int | Sequence[int], mode: str = "crop", *, crop_fraction: float = 1.0
) -> tuple[float, float, float, float]:
    """Where :func:`resize_image` puts a ``source`` (height, width) image in its output.

    Returns:
        (left, top, scale_x, scale_y): output point (x, y), in pixel-edge coordinates, shows
        source point (left + x * scale_x, top + y * scale_y). Outside the source (the margins
        of ``"pad"``) it shows the fill.
    """
    height, width = _check_size(size)
    src_h, src_w = (int(v) for v in source)
    if mode == "resize":
        return 0.0, 0.0, src_w / width, src_h / height
    if mode == "crop":
        target = width / height
        box_w, box_h = (src_h * target, src_h) if src_w / src_h > target else (src_w, src_w / target)
        box_w, box_h = box_w * crop_fraction, box_h * crop_fraction
        return (src_w - box_w) / 2, (src_h - box_h) / 2, box_w / width, box_h / height
    if mode != "pad":
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    scale = min(width / src_w, height / src_h)
    new_w = min(width, max(1, round(src_w * scale)))
    new_h = min(height, max(1, round(src_h * scale)))
    sx, sy = src_w / new_w, src_h / new_h
    return -((width - new_w) // 2) * sx, -((height - new_h) // 2) * sy, sx, sy


def _fill_color(fill: int | Sequence[int], channels: int) -> int | tuple[int, ...]:
    values = (fill,) if isinstance(fill, int) else tuple(fill)
    if len(values) not in (1, 3) or not all(isinstance(v, int) and 0 <= v <= 255 for v in values):
        raise ValueError(f"fill must be an int or three ints in 0..255, got {fill!r}")
    if channels == 1:
        return values[0] if len(values) == 1 else int(_luma(np.asarray(values, np.uint8)[None])[0])
    return values * 3 if len(values) == 1 else values


def fashion_mnist_style(pixels: np.ndarray, size: int = 28, threshold: int = 32) -> np.ndarray:
    """Turn a photo of one clothing item into a Fashion-MNIST-like image.

    Fashion-MNIST items are light on a black background, trimmed to the item and centred
    (Xiao et al., 2017). A product photo is usually dark on light, so:

    1. convert to grayscale (ITU-R 601 luma);
    2. estimate the background as the median of the border pixels; if it is light (> 127),
       invert, so the item is light on dark;
    3. subtract the background level and stretch to 0..255 (the background becomes 0);
    4. trim to the bounding box of pixels brighter than ``threshold``;
    5. letterbox to a square with black margins and resize to ``size`` × ``size``.

    An image that is already ``size`` × ``size`` grayscale (an exported Fashion-MNIST sample)
    is returned unchanged.

    Args:
        pixels: uint8 [H, W, 1 or 3].
        size: output side.
        threshold: level (after step 3) that counts as part of the item when trimming.

    Returns:
        uint8 [size, size, 1].
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"expected uint8 pixels [H, W, 1 or 3], got {pixels.dtype} {pixels.shape}")
    if pixels.shape == (size, size, 1):
        return pixels
    gray = pixels[..., 0] if pixels.shape[2] == 1 else _luma(pixels)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    level = int(np.median(border))
    if level > 127:
        gray = 255 - gray
        level = 255 - level
    span = max(1, 255 - level)
    stretched = np.clip((gray.astype(np.int32) - level) * 255 // span, 0, 255).astype(np.uint8)
    rows = np.flatnonzero((stretched > threshold).any(axis=1))
    cols = np.flatnonzero((stretched > threshold).any(axis=0))
    if rows.size and cols.size:
        stretched = stretched[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return resize_image(stretched[..., None], size, "pad", fill=0, interpolation="bilinear")


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes one model input.

    Build it from a preset (``Preprocess.preset("caffe", size=224)``), from a weights' or run's
    metadata (``Preprocess.from_config``), or field by field.

    Attributes:
        size: (height, width) of the model input.
        channels: 1 or 3; grayscale files are repeated to 3 channels, colour files are
            reduced to luma for 1-channel models.
        resize: ``"crop"``, ``"resize"`` or ``"pad"`` (see :func:`resize_image`).
        crop_fraction: central fraction kept in ``"crop"`` mode (torchvision: 224/256).
        interpolation: see :func:`resize_image`.
        scale: pixel multiplier applied first (1/255 for [0, 1] inputs, 1.0 for "caffe").
        mean: per-channel mean subtracted after scaling (in channel_order); one value for all.
        std: per-channel divisor after the mean.
        channel_order: ``"RGB"`` or ``"BGR"`` (Keras "caffe" models).
        background: RGB colour under transparent pixels.
        fill: colour of the ``"pad"`` margins.
        fashion_mnist: apply :func:`fashion_mnist_style` (for photos given to a Fashion-MNIST
            model; needs ``channels=1``).
        max_bytes: file-size limit, see :func:`open_image`.
        max_pixels: pixel-count limit, see :func:`open_image`.
    """

    size: tuple[int, int] = (224, 224)
    channels: int = 3
    resize: str = "crop"
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"
    scale: float = 1 / 255
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channel_order: str = "RGB"
    background: tuple[int, int, int] = (255, 255, 255)
    fill: int | tuple[int, int, int] = 0
    fashion_mnist: bool = False
    max_bytes: int = MAX_FILE_BYTES
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _check_size(self.size))
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {list(_RESAMPLE)}, got {self.interpolation!r}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if not (isinstance(self.scale, int | float) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a positive number, got {self.scale!r}")
        for key in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, key))
            if len(values) not in (1, self.channels) or not all(math.isfinite(v) for v in values):
                raise ValueError(
                    f"{key} must have 1 or {self.channels} finite values for a "
                    f"{self.channels}-channel model, got {getattr(self, key)!r}"
                )
            object.__setattr__(self, key, values)
        if any(v == 0 for v in self.std):
            raise ValueError(f"std must not contain 0, got {self.std!r}")
        if self.fashion_mnist and self.channels != 1:
            raise ValueError("fashion_mnist=True needs channels=1 (Fashion-MNIST images are grayscale)")
        object.__setattr__(self, "background", tuple(self.background))
        _check_limits(self.max_bytes, self.max_pixels)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Preprocess:
        """A named normalisation (``NORMALIZATIONS``) with other fields as given.

        ``"imagenet"`` is torchvision's; ``"caffe"`` is Keras ``resnet50.preprocess_input``
        (RGB -> BGR, subtract the ImageNet mean in 0..255, no scaling); ``"tf"`` maps to
        [-1, 1]; ``"unit"`` to [0, 1]. ``"fashion"`` is ``"unit"`` on 28 × 28 grayscale with
        :func:`fashion_mnist_style`.

        Raises:
            ValueError: an unknown name, listing the valid ones.
        """
        if name == "fashion":
            base: dict[str, Any] = {
                "size": (28, 28),
                "channels": 1,
                "resize": "pad",
                "fashion_mnist": True,
            }
            name = "unit"
        else:
            base = {}
        if name not in NORMALIZATIONS:
            raise ValueError(f"unknown preprocessing {name!r}; choose from {[*NORMALIZATIONS, 'fashion']}")
        scale, mean, std, order = NORMALIZATIONS[name]
        channels = overrides.get("channels", base.get("channels", 3))
        if channels == 1 and len(mean) == 3:
            # A 1-channel model gets the channel average (what reducing RGB to gray implies).
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        fields_ = {
            "scale": scale,
            "mean": mean,
            "std": std,
            "channel_order": order,
            **base,
            **overrides,
        }
        return cls(**fields_)

    @classmethod
    def from_config(cls, config: dict[str, Any], **overrides: Any) -> Preprocess:
        """Build from weights or run metadata.

        Understands ``input_shape`` / ``input_size`` ([C, H, W]), ``crop_fraction``,
        ``interpolation``, ``resize``, ``fashion_mnist`` and ``normalize``, which is one of:
        absent (torchvision's ImageNet mean/std for 3 channels, [0, 1] for 1 channel);
        None (a cnnkit run: pixels / 255); ``{"preset": name}``; ``{"mean": [...],
        "std": [...]}`` or ``[mean, std]`` on the [0, 1] scale. Other keys are ignored (they
        describe training, not preprocessing). ``overrides`` win.

        Raises:
            ValueError: a field that cannot be used, naming it.
        """
        kwargs: dict[str, Any] = {}
        shape = config.get("input_shape") or config.get("input_size")
        if shape is not None:
            if len(shape) != 3:
                raise ValueError(f"input_shape must be [C, H, W], got {shape!r}")
            kwargs["channels"], kwargs["size"] = int(shape[0]), (int(shape[1]), int(shape[2]))
        for key in ("crop_fraction", "interpolation", "resize", "fashion_mnist"):
            if config.get(key) is not None:
                kwargs[key] = config[key]
        kwargs.update(overrides)
        if "normalize" not in config:
            return cls.preset("imagenet" if kwargs.get("channels", 3) == 3 else "unit", **kwargs)
        norm = config["normalize"]
        if norm is None:
            return cls.preset("unit", **kwargs)
        if isinstance(norm, dict) and "preset" in norm:
            return cls.preset(norm["preset"], **kwargs)
        if isinstance(norm, list | tuple) and len(norm) == 2:
            norm = {"mean": norm[0], "std": norm[1]}
        if not isinstance(norm, dict) or "mean" not in norm or "std" not in norm:
            raise ValueError(
                f"normalize must be null, {{'preset': name}}, {{'mean', 'std'}} or [mean, std], got {norm!r}"
            )
        kwargs.setdefault("mean", tuple(norm["mean"]))
        kwargs.setdefault("std", tuple(norm["std"]))
        kwargs.setdefault("scale", 1 / 255)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (for run configs and ``--json`` output)."""
        out = asdict(self)
        out["size"] = list(self.size)
        return out

    def pixels(self, source: str | os.PathLike[str] | Image.Image | np.ndarray) -> np.ndarray:
        """Load (if a path), convert and resize: uint8 [H, W, channels] as the model sees it."""
        if isinstance(source, Image.Image):
            array = to_array(source, channels=None, background=self.background)
        elif isinstance(source, np.ndarray):
            array = source if source.ndim == 3 else source[..., None]
            if array.dtype != np.uint8 or array.shape[2] not in (1, 3):
                raise ValueError(
                    f"expected uint8 pixels [H, W] or [H, W, 1 or 3], got {source.dtype} {source.shape}"
                )
        else:
            array = load_image(
                source,
                channels=None,
                background=self.background,
                max_bytes=self.max_bytes,
                max_pixels=self.max_pixels,
            )
        if self.fashion_mnist:
            array = fashion_mnist_style(array, size=self.size[0])
            if self.size[0] != self.size[1]:
                array = resize_image(array, self.size, "pad", interpolation=self.interpolation)
        else:
            array = resize_image(
                array,
                self.size,
                self.resize,
                crop_fraction=self.crop_fraction,
                fill=self.fill,
                interpolation=self.interpolation,
            )
        if self.channels == 3 and array.shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
        elif self.channels == 1 and array.shape[2] == 3:
            array = _luma(array)[..., None]
        return array

    def frame(self, height: int, width: int) -> tuple[float, float, float, float]:
        """:func:`resize_frame` of a ``height`` × ``width`` image: (left, top, scale_x, scale_y).

        Raises:
            ValueError: ``fashion_mnist`` preprocessing (it crops to the item: no fixed frame).
        """
        if self.fashion_mnist:
            raise ValueError("fashion_mnist preprocessing crops to the item: it maps no fixed frame")
        return resize_frame((height, width), self.size, self.resize, crop_fraction=self.crop_fraction)

    def normalize(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [H, W, C] (or [N, H, W, C]) pixels -> float32 Tensor[C, H, W] (or [N, C, H, W])."""
        import torch

        if isinstance(pixels, np.ndarray):
            return torch.from_numpy(self.normalize_array(pixels))
        x = pixels.movedim(-1, -3).to(torch.float32) * self.scale
        if self.channel_order == "BGR":
            x = x.flip(-3)
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32).view(shape)
        return ((x - mean) / std).contiguous()

    def normalize_array(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [H, W, C] (or [N, H, W, C]) pixels -> float32 [C, H, W] (or [N, C, H, W]), in NumPy
        (the same float32 steps as :meth:`normalize`)."""
        x = np.moveaxis(np.asarray(pixels), -1, -3).astype(np.float32) * np.float32(self.scale)
        if self.channel_order == "BGR":
            x = np.flip(x, -3)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(-1, 1, 1)
        return np.ascontiguousarray((x - mean) / std)

    def __call__(self, source: str | os.PathLike[str] | Image.Image | np.ndarray) -> torch.Tensor:
        """One image (file, PIL image or uint8 pixels) -> float32 Tensor[channels, H, W].

        Raises:
            DataError: a file that cannot be used; the message starts with its name.
        """
        return self.normalize(self.pixels(source))
