"""Image files in, model-ready tensors out: the one image loader every cnnkit command uses.

Reading (``open_image`` / ``load_image``):

- Formats: JPEG, PNG, WebP, BMP, TIFF and GIF (first frame), decoded by Pillow. Everything else
  (EPS and PDF need Ghostscript, PSD, FITS, ...) is refused before Pillow parses it.
- Limits are checked before any pixel is decoded: the file size before reading, the pixel count
  right after Pillow has read the header. Pillow's own decompression-bomb warning is turned
  into an error, and truncated files are errors (Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off).
- EXIF orientation is applied, so a phone photo comes out the way it is shown.
- Pixel modes become 8-bit grayscale or RGB: palettes are looked up, transparency (alpha,
  ``tRNS``, GIF transparency) is composited on a background colour (white by default),
  CMYK uses ``R = (255 - C)(255 - K) / 255``, and 16-bit samples keep their high byte
  (``x // 256``), the scaling Pillow itself applies to 16-bit colour PNGs, so a 16-bit
  gray and a 16-bit colour file of the same scene agree. Embedded colour profiles are ignored,
  as in torchvision's loaders (the published weights were trained that way).

Every error is a :class:`~cnnkit.errors.DataError` whose message starts with the file name.

Preparing (``resize_image`` / ``Preprocess``): three resize modes, ``"resize"`` (stretch to the
size), ``"crop"`` (aspect-preserving centre crop, then resize) and ``"pad"`` (letterbox: fit
inside, fill the rest); per-model normalisation (torchvision mean/std, Keras "caffe" BGR mean
subtraction, "tf" [-1, 1], or plain [0, 1]); grayscale and RGB adapted to the model's channels.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

__all__ = [
    "ALLOWED_FORMATS",
    "IMAGE_EXTENSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "NORMALIZATIONS",
    "RESIZE_MODES",
    "Preprocess",
    "fashion_mnist_style",
    "find_images",
    "load_image",
    "open_image",
    "resize_image",
    "to_array",
]

# Pillow format names cnnkit decodes. Deliberately short: every extra plugin is attack surface.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
# 64 MB holds any ordinary photo (a 48-megapixel phone JPEG is ~15 MB).
MAX_FILE_BYTES = 64 * 1024**2
# 64 megapixels (e.g. 8000 × 8000) decodes to at most 512 MB (16-bit RGBA); Pillow's own
# bomb limit (Image.MAX_IMAGE_PIXELS, ~89 Mpx) stays in force above it.
MAX_PIXELS = 64_000_000

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
# Exceptions Pillow's decoders raise on malformed input (its own fuzzers expect the same set).
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    MemoryError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)
# Magic numbers of formats people try that cnnkit refuses, to say what the file is.
_REFUSED_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%!PS", "EPS/PostScript (needs Ghostscript, which can run code)"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS/PostScript (needs Ghostscript, which can run code)"),
    (0, b"%PDF", "PDF"),
    (0, b"8BPS", "PSD (Photoshop)"),
    (0, b"SIMPLE  =", "FITS"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"qoif", "QOI"),
    (0, b"\xd7\xcd\xc6\x9a", "WMF"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "XML/SVG"),
)


def _check_limits(max_bytes: int, max_pixels: int) -> None:
    if not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    if not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    ceiling = Image.MAX_IMAGE_PIXELS
    if ceiling is None:
        raise ValueError(
            "PIL.Image.MAX_IMAGE_PIXELS is None, which disables Pillow's decompression-bomb "
            "check; cnnkit will not decode images that way. Set it back to a number "
            "(Pillow's default is 89478485)"
        )
    if max_pixels > ceiling:
        raise ValueError(
            f"max_pixels={max_pixels:,} is above Pillow's bomb limit Image.MAX_IMAGE_PIXELS="
            f"{ceiling:,}; raise that first if you really need larger images"
        )


def _check_formats(formats: Sequence[str]) -> list[str]:
    chosen = [f.upper() for f in formats]
    unknown = [f for f in chosen if f not in ALLOWED_FORMATS]
    if unknown or not chosen:
        raise ValueError(
            f"formats must be a non-empty subset of {list(ALLOWED_FORMATS)}, got {list(formats)!r}"
        )
    return chosen


def _describe_unknown(data: bytes, formats: Sequence[str]) -> str:
    for offset, magic, name in _REFUSED_SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return f"is {name}, which cnnkit does not read (allowed: {', '.join(formats)})"
    return f"is not a {', '.join(formats)} image (it starts with {data[:12]!r})"


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{path}: is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block, a device never ends
        raise DataError(f"{path}: is not a regular file")
    size = info.st_size
    if size > max_bytes:
        raise DataError(
            f"{path}: {size:,} bytes is over the {max_bytes:,}-byte limit for one image "
            "(pass a larger max_bytes if the file is trusted)"
        )
    try:
        with open(path, "rb") as handle:
            # Read one byte past the limit: the file may have grown since stat().
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise DataError(f"{path}: is empty (0 bytes), not an image")
    if len(data) > max_bytes:
        raise DataError(f"{path}: over the {max_bytes:,}-byte limit for one image")
    return data


def open_image(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_pixels: int = MAX_PIXELS,
    formats: Sequence[str] = ALLOWED_FORMATS,
) -> Image.Image:
    """Read and decode one image file safely: first frame, EXIF orientation applied.

    The returned image keeps the file's pixel mode (``"RGB"``, ``"P"``, ``"I;16"``, ...);
    :func:`to_array` turns it into 8-bit grayscale or RGB.

    Args:
        path: the image file.
        max_bytes: refuse larger files without reading them.
        max_pixels: refuse images whose header declares more pixels, before decoding them.
            At most ``PIL.Image.MAX_IMAGE_PIXELS``.
        formats: Pillow format names to accept, a subset of ``ALLOWED_FORMATS``.

    Returns:
        The decoded image, detached from the file.

    Raises:
        DataError: missing, empty, too large, not an allowed format, truncated or corrupt;
            the message starts with the file name.
        ValueError: a limit or format list that cannot be used.
    """
    _check_limits(max_bytes, max_pixels)
    chosen = _check_formats(formats)
    path = Path(path)
    data = _read_bytes(path, max_bytes)
    with warnings.catch_warnings():
        # Pillow's notes on damaged metadata ("Corrupt EXIF data") would interleave with a
        # batch's output; the pixels decide whether the file is usable.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        # Pillow warns (and only errors at twice its limit); a warning is an error here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=chosen)
        except UnidentifiedImageError:
            raise DataError(f"{path}: {_describe_unknown(data, chosen)}") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(
                f"{path}: refused before decoding by the decompression-bomb check ({exc})"
            ) from None
        except _DECODE_ERRORS as exc:
            raise DataError(f"{path}: truncated or corrupt {_guess(data)} header ({_reason(exc)})") from None
        width, height = image.size
        if width < 1 or height < 1:
            raise DataError(f"{path}: header declares an empty {width}×{height} image")
        if width * height > max_pixels:
            raise DataError(
                f"{path}: header declares {width:,}×{height:,} = {width * height:,} pixels, "
                f"over the {max_pixels:,}-pixel limit (pass a larger max_pixels if the file "
                "is trusted)"
            )
        try:
            image.load()
            # exif_transpose returns a new image without the orientation tag (or a copy).
            result = ImageOps.exif_transpose(image)
        except _DECODE_ERRORS as exc:
            raise DataError(f"{path}: truncated or corrupt {image.format} data ({_reason(exc)})") from None
    if result is None:  # only with in_place=True, which is not used; keeps type checkers honest
        result = image
    return result


def _guess(data: bytes) -> str:
    for magic, name in (
        (b"\xff\xd8", "JPEG"),
        (b"\x89PNG", "PNG"),
        (b"GIF8", "GIF"),
        (b"BM", "BMP"),
    ):
        if data.startswith(magic):
            return name
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return "image"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of uint8 RGB [..., 3] -> uint8 [...], rounded half up."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 299 + g * 587 + b * 114 + 500) // 1000).astype(np.uint8)


def _composite(color: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``color * a + background * (1 - a)`` in uint8, rounded; color [H, W, C], alpha [H, W]."""
    a = alpha.astype(np.uint32)[..., None]
    out = (color.astype(np.uint32) * a + background.astype(np.uint32) * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _decoded_pixels(image: Image.Image, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 gray [H, W] or RGB [H, W, 3] pixels, and alpha [H, W] or None."""
    mode = image.mode
    has_tRNS = "transparency" in image.info
    if mode == "P":
        palette_mode = getattr(image.palette, "mode", "RGB")
        image = image.convert("RGBA" if has_tRNS or palette_mode == "RGBA" else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode in ("L", "1") and has_tRNS:
        image = image.convert("LA")
    elif mode == "RGB" and has_tRNS:
        image = image.convert("RGBA")
    elif mode == "La":
        image = image.convert("LA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    elif mode in ("RGBX", "YCbCr", "1"):
        image = image.convert("L" if mode == "1" else "RGB")
    mode = image.mode
    if mode in ("L", "RGB"):
        return np.asarray(image), None
    if mode in ("LA", "RGBA"):
        both = np.asarray(image)
        pixels = both[..., 0] if mode == "LA" else both[..., :3]
        return pixels, both[..., -1]
    if mode == "CMYK":
        cmyk = np.asarray(image).astype(np.uint32)
        ink = 255 - cmyk[..., 3:4]
        return (((255 - cmyk[..., :3]) * ink + 127) // 255).astype(np.uint8), None
    if mode.startswith("I;16") or mode == "I":
        wide = np.asarray(image)
        if wide.size and (int(wide.min()) < 0 or int(wide.max()) > 65535):
            raise DataError(
                f"{name}: integer pixels outside 0..65535 (min {int(wide.min())}, "
                f"max {int(wide.max())}); save it as 8- or 16-bit"
            )
        return (wide.astype(np.uint32) >> 8).astype(np.uint8), None
    raise DataError(
        f"{name}: pixel mode {mode!r} is not supported (8/16-bit gray, palette, RGB, RGBA, "
        "CMYK are); save it as 8-bit RGB"
    )


def to_array(
    image: Image.Image,
    *,
    channels: int | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    name: str = "image",
) -> np.ndarray:
    """Convert a decoded image of any supported mode to 8-bit pixels.

    Args:
        image: e.g. from :func:`open_image`.
        channels: 1 (grayscale), 3 (RGB) or None to keep the image's own (1 for gray modes,
            3 for colour ones).
        background: RGB colour that transparent pixels are composited on.
        name: what to call the image in error messages (the file name).

    Returns:
        uint8 array [H, W, channels].

    Raises:
        DataError: a pixel mode cnnkit does not convert (32-bit float, LAB, ...).
        ValueError: a bad ``channels`` or ``background``.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    if len(background) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in background):
        raise ValueError(f"background must be three ints in 0..255, got {background!r}")
    bg = np.asarray(background, dtype=np.uint8)
    try:
        pixels, alpha = _decoded_pixels(image, name)
    except DataError:
        raise
    except _DECODE_ERRORS as exc:  # Pillow's conversions can fail on damaged palettes
        raise DataError(f"{name}: pixel mode {image.mode} cannot be converted ({_reason(exc)})") from None

    gray = pixels.ndim == 2
    if alpha is not None:
        if gray:
            gray_bg = _luma(bg[None, :])[0]
            pixels = _composite(pixels[..., None], alpha, gray_bg[None])[..., 0]
        else:
            pixels = _composite(pixels, alpha, bg)
    want = channels or (1 if gray else 3)
    if gray:
        pixels = pixels[..., None]
        if want == 3:
            pixels = np.repeat(pixels, 3, axis=2)
    elif want == 1:
        pixels = _luma(pixels)[..., None]
    return np.ascontiguousarray(pixels)


def load_image(
    path: str | os.PathLike[str],
    *,
    channels: int | None = 3,
    background: tuple[int, int, int] = (255, 255, 255),
    max_bytes: int = MAX_FILE_BYTES,
    max_pixels: int = MAX_PIXELS,
    formats: Sequence[str] = ALLOWED_FORMATS,
) -> np.ndarray:
    """Read an image file into 8-bit pixels (see the module docstring for every conversion).

    Args:
        path: the image file.
        channels: 1, 3 or None (keep the file's own).
        background: RGB colour under transparent pixels.
        max_bytes: see :func:`open_image`.
        max_pixels: see :func:`open_image`.
        formats: see :func:`open_image`.

    Returns:
        uint8 array [H, W, channels], oriented as EXIF says.

    Raises:
        DataError: the file cannot be used; the message starts with its name.
    """
    image = open_image(path, max_bytes=max_bytes, max_pixels=max_pixels, formats=formats)
    return to_array(image, channels=channels, background=background, name=str(path))


def _as_pil(pixels: np.ndarray) -> Image.Image:
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"expected uint8 pixels [H, W, 1 or 3], got {pixels.dtype} {pixels.shape}")
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

    def normalize(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [H, W, C] (or [N, H, W, C]) pixels -> float32 Tensor[C, H, W] (or [N, C, H, W])."""
        # np.array copies: Pillow's arrays are read-only and torch wants writable memory.
        x = torch.from_numpy(np.array(pixels)) if isinstance(pixels, np.ndarray) else pixels
        x = x.movedim(-1, -3).to(torch.float32) * self.scale
        if self.channel_order == "BGR":
            x = x.flip(-3)
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32).view(shape)
        return ((x - mean) / std).contiguous()

    def __call__(self, source: str | os.PathLike[str] | Image.Image | np.ndarray) -> torch.Tensor:
        """One image (file, PIL image or uint8 pixels) -> float32 Tensor[channels, H, W].

        Raises:
            DataError: a file that cannot be used; the message starts with its name.
        """
        return self.normalize(self.pixels(source))


def find_images(
    paths: Sequence[str | os.PathLike[str]], extensions: frozenset[str] = IMAGE_EXTENSIONS
) -> list[tuple[Path, str | None]]:
    """Expand files and folders into image files, in a stable order.

    Files named explicitly are kept whatever their extension (so that a bad one is reported,
    not silently dropped). Folders are walked recursively, keeping files whose extension is
    in ``extensions`` (case-insensitive) and skipping hidden files and folders.

    Returns:
        (path, problem) pairs: problem is None, or a message for a path that does not exist
        or a folder without images.
    """
    found: list[tuple[Path, str | None]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in extensions
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not files:
                found.append(
                    (
                        path,
                        f"{path}: no image files in this folder ({', '.join(sorted(extensions))})",
                    )
                )
            found.extend((p, None) for p in files)
        elif path.exists():
            found.append((path, None))
        else:
            found.append((path, f"{path}: no such file or folder"))
    return found
