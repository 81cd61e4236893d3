"""Image files in, 8-bit pixels out: the one safe image decoder every cnnkit command uses.

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

Preparing the pixels for a model (resizing, normalisation) is :mod:`cnnkit.data.preprocess`.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError
from .file_types import describe_unknown, signature_format

__all__ = [
    "ALLOWED_FORMATS",
    "IMAGE_EXTENSIONS",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "decode_image",
    "find_images",
    "image_size",
    "load_image",
    "open_image",
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
_EXIF_ORIENTATION = 0x0112


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


def _read_bytes(path: Path, max_bytes: int, max_pixels: int) -> bytes:
    """The file's bytes, the limits checked before it is touched."""
    _check_limits(max_bytes, max_pixels)
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
        The decoded image, detached from the file; ``.format`` names its format.

    Raises:
        DataError: missing, empty, too large, not an allowed format, truncated or corrupt;
            the message starts with the file name.
        ValueError: a limit or format list that cannot be used.
    """
    data = _read_bytes(Path(path), max_bytes, max_pixels)
    return decode_image(data, str(path), max_bytes=max_bytes, max_pixels=max_pixels, formats=formats)


def decode_image(
    data: bytes,
    name: str,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_pixels: int = MAX_PIXELS,
    formats: Sequence[str] = ALLOWED_FORMATS,
) -> Image.Image:
    """Decode an image held in memory (an upload), with the checks and limits of :func:`open_image`.

    Args:
        data: the encoded file.
        name: what to call it in error messages.
        max_bytes: refuse more bytes than this.
        max_pixels: see :func:`open_image`.
        formats: see :func:`open_image`.

    Raises:
        DataError: empty, too large, not an allowed format, truncated or corrupt; the message
            starts with ``name``.
    """
    with _decoding():
        image = _open_header(data, name, max_bytes, max_pixels, formats)
        try:
            image.load()
            # In place: a rotated image gets the turned pixels and loses the orientation tag; an
            # upright one (most files) is kept as decoded, not copied.
            ImageOps.exif_transpose(image, in_place=True)
        except _DECODE_ERRORS as exc:
            raise DataError(f"{name}: truncated or corrupt {image.format} data ({_reason(exc)})") from None
    return image


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    with warnings.catch_warnings():
        # Pillow's notes on damaged metadata ("Corrupt EXIF data") would interleave with a
        # batch's output; the pixels decide whether the file is usable.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        # Pillow warns (and only errors at twice its limit); a warning is an error here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _open_header(
    data: bytes, name: str, max_bytes: int, max_pixels: int, formats: Sequence[str]
) -> Image.Image:
    """The bytes' header parsed by an allowed plugin (chosen by content), the size and pixel
    count checked; no pixel decoded yet."""
    _check_limits(max_bytes, max_pixels)
    chosen = _check_formats(formats)
    if not data:
        raise DataError(f"{name}: is empty (0 bytes), not an image")
    if len(data) > max_bytes:
        raise DataError(f"{name}: {len(data):,} bytes is over the {max_bytes:,}-byte limit for one image")
    try:
        image = Image.open(io.BytesIO(data), formats=chosen)
    except UnidentifiedImageError:
        raise DataError(f"{name}: {describe_unknown(data, chosen)}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{name}: refused before decoding by the decompression-bomb check ({exc})") from None
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"{name}: truncated or corrupt {signature_format(data) or 'image'} header ({_reason(exc)})"
        ) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise DataError(f"{name}: header declares an empty {width}×{height} image")
    if width * height > max_pixels:
        raise DataError(
            f"{name}: header declares {width:,}×{height:,} = {width * height:,} pixels, "
            f"over the {max_pixels:,}-pixel limit (pass a larger max_pixels if the file "
            "is trusted)"
        )
    return image


def image_size(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_pixels: int = MAX_PIXELS,
    formats: Sequence[str] = ALLOWED_FORMATS,
) -> tuple[int, int]:
    """(width, height) of an image file as :func:`open_image` would return it (EXIF rotation
    applied), from its header only, with the same limits and format checks.

    Raises:
        DataError: the file cannot be used; the message starts with its name.
    """
    data = _read_bytes(Path(path), max_bytes, max_pixels)
    with _decoding():
        image = _open_header(data, str(path), max_bytes, max_pixels, formats)
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        except _DECODE_ERRORS:
            orientation = 1  # exif_transpose ignores unreadable EXIF the same way
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


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
            visible = [
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ]
            files = sorted(p for p in visible if p.suffix.lower() in extensions)
            if not files:
                message = f"{path}: no image files in this folder ({', '.join(sorted(extensions))})"
                others = sorted({p.suffix.lower() or "(none)" for p in visible})
                if others:  # what is there instead: HEIC photos, say, to convert first
                    message += (
                        f"; its {len(visible)} other file(s) end in {', '.join(others)}: "
                        "convert images to JPEG or PNG"
                    )
                found.append((path, message))
            found.extend((p, None) for p in files)
        elif path.exists():
            found.append((path, None))
        else:
            found.append((path, f"{path}: no such file or folder"))
    return found
