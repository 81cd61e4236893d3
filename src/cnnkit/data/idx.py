"""A validating reader for IDX files (the MNIST / Fashion-MNIST format), plain or gzipped.

Every check happens before any large allocation, and every error names the file.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

# type code -> (numpy dtype, big-endian)
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# The largest payload we agree to read: the biggest real IDX files are ~50 MB.
MAX_PAYLOAD_BYTES = 2 * 1024**3
# The payload is read in pieces of this size, so memory grows with the bytes really there: a
# 100-byte file whose header declares 1.5 GB would otherwise make read(n) allocate all n up front.
READ_CHUNK_BYTES = 16 * 1024**2


def _open(path: Path):
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _read_at_most(f, n: int) -> bytearray:
    data = bytearray()
    while len(data) < n:
        chunk = f.read(min(READ_CHUNK_BYTES, n - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def read_idx(path: str | os.PathLike[str], max_bytes: int = MAX_PAYLOAD_BYTES) -> np.ndarray:
    """Read an IDX file into a NumPy array of its declared type and shape.

    Args:
        path: ``.idx``/``-ubyte`` file, optionally gzip-compressed (detected from the content).
        max_bytes: refuse files whose header declares a larger payload.

    Returns:
        Array with the dims from the header (e.g. uint8 [N, 28, 28] for images, [N] for labels).

    Raises:
        DataError: bad magic number, unknown type code, absurd dims, payload shorter or longer
            than the header says, unreadable or corrupt gzip. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such IDX file")
    try:
        with _open(path) as f:
            header = f.read(4)
            if len(header) < 4:
                raise DataError(f"{path}: too short for an IDX header ({len(header)} bytes)")
            zero1, zero2, type_code, ndim = header
            if zero1 != 0 or zero2 != 0:
                raise DataError(
                    f"{path}: bad magic number 0x{header.hex()} (an IDX file starts with two zero bytes)"
                )
            if type_code not in IDX_TYPES:
                raise DataError(f"{path}: unknown IDX type code 0x{type_code:02x}")
            if not 1 <= ndim <= 4:
                raise DataError(f"{path}: {ndim} dimensions declared; IDX data here has 1 to 4")
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path}: header ends before its {ndim} dimension sizes")
            dims = struct.unpack(f">{ndim}I", dims_raw)
            dtype = IDX_TYPES[type_code]
            count = 1
            for d in dims:
                count *= d
            expected = count * dtype.itemsize
            # An empty dim makes the product 0, but the others must still be sane: NumPy refuses
            # to even describe an empty array with absurd dims.
            if expected > max_bytes or math.prod(max(d, 1) for d in dims) * dtype.itemsize > max_bytes:
                raise DataError(
                    f"{path}: header declares dims {dims}, more than the {max_bytes:,}-byte limit "
                    "allows (not an IDX file, or a damaged header)"
                )
            payload = _read_at_most(f, expected)
            if len(payload) < expected:
                raise DataError(
                    f"{path}: payload is {len(payload):,} bytes but dims {dims} need {expected:,} "
                    "(file truncated?)"
                )
            if f.read(1):
                raise DataError(f"{path}: trailing bytes after the {expected:,}-byte payload of dims {dims}")
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataError(f"{path}: no such IDX file") from None
        raise DataError(f"{path}: cannot be read as IDX ({exc})") from None
    return np.frombuffer(payload, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


# 0x0 and 1x1 "images" hold no spatial pattern for a convolution to find.
MIN_IMAGE_SIDE = 2


def read_idx_pair(
    images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str], num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file and its labels file and check that they agree.

    Returns:
        images (uint8 [N, H, W]) and labels (int64 [N]).

    Raises:
        DataError: wrong ranks or types, float labels, images smaller than 2x2, counts that
            differ, labels outside [0, num_classes).
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected a 1-D label vector, got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise DataError(
            f"{labels_path}: labels are {labels.dtype.name} numbers; class labels must be an integer "
            "IDX type (0x08 unsigned byte, as in MNIST), so that 1.5 or NaN cannot slip through"
        )
    if images.ndim == 3 and min(images.shape[1:]) < MIN_IMAGE_SIDE:
        raise DataError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]} pixels; an image needs "
            f"at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images):,} images but {labels_path} holds {len(labels):,} labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels[(labels < 0) | (labels >= num_classes)][0])
        raise DataError(f"{labels_path}: label {bad} is outside 0..{num_classes - 1}")
    return images, labels.astype(np.int64)


def write_idx(path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip if ``compress`` or the name ends in .gz)."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("=").str: k for k, v in IDX_TYPES.items()}
    key = array.dtype.newbyteorder("=").str
    if key not in codes:
        raise ValueError(f"dtype {array.dtype} has no IDX type code; use one of {list(IDX_TYPES.values())}")
    code = codes[key]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(IDX_TYPES[code], copy=False).tobytes()
    path = Path(path)
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
