"""What an image file is, from its first bytes: for the message when Pillow cannot identify it.

The decoder (:mod:`cnnkit.data.image_io`) lets Pillow pick the plugin by content among the
allowed formats. When none of them takes the file, the bytes say why: a format cnnkit refuses
(PDF, EPS, HEIC, ...), a damaged file of an allowed format (its signature is right but the
header after it is not), or something else altogether.
"""

from __future__ import annotations

from collections.abc import Sequence

READ = "read"  # the two kinds of SIGNATURES: formats cnnkit reads, and formats it refuses
REFUSED = "refused"
# (offset, magic, name, kind): the allowed formats, to name a damaged file, and formats people
# try that cnnkit refuses, to say what the file is.
SIGNATURES: tuple[tuple[int, bytes, str, str], ...] = (
    (0, b"\x89PNG", "PNG", READ),
    (0, b"\xff\xd8", "JPEG", READ),
    (8, b"WEBP", "WebP", READ),
    (0, b"GIF87a", "GIF", READ),
    (0, b"GIF89a", "GIF", READ),
    (0, b"BM", "BMP", READ),
    (0, b"II*\x00", "TIFF", READ),
    (0, b"MM\x00*", "TIFF", READ),
    (0, b"%!PS", "EPS/PostScript (needs Ghostscript, which can run code)", REFUSED),
    (0, b"\xc5\xd0\xd3\xc6", "EPS/PostScript (needs Ghostscript, which can run code)", REFUSED),
    (0, b"%PDF", "PDF", REFUSED),
    (0, b"8BPS", "PSD (Photoshop)", REFUSED),
    (0, b"SIMPLE  =", "FITS", REFUSED),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000", REFUSED),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000", REFUSED),
    (4, b"ftypavif", "AVIF", REFUSED),
    (4, b"ftypheic", "HEIC", REFUSED),
    (4, b"ftypmif1", "HEIF", REFUSED),
    (0, b"\x00\x00\x01\x00", "ICO", REFUSED),
    (0, b"qoif", "QOI", REFUSED),
    (0, b"\xd7\xcd\xc6\x9a", "WMF", REFUSED),
    (0, b"<svg", "SVG", REFUSED),
    (0, b"<?xml", "XML/SVG", REFUSED),
)


def _match(data: bytes, kind: str) -> str | None:
    return next(
        (name for at, magic, name, k in SIGNATURES if k == kind and data[at : at + len(magic)] == magic),
        None,
    )


def signature_format(data: bytes) -> str | None:
    """The allowed format whose signature ``data`` starts with (``"PNG"``, ``"WebP"``...), if any."""
    return _match(data, READ)


def describe_unknown(data: bytes, formats: Sequence[str]) -> str:
    """Why no allowed plugin took ``data`` (the rest of a message that starts with the file's
    name): a refused format by name, a damaged file of an allowed format, or the first bytes."""
    refused = _match(data, REFUSED)
    if refused is not None:
        return (
            f"is {refused}, which cnnkit does not read (allowed: {', '.join(formats)}); convert it "
            "to JPEG or PNG"
        )
    name = signature_format(data)
    if name is not None and name.upper() in formats:
        return (
            f"truncated or corrupt {name} file: it starts with the {name} signature but has no "
            f"readable header ({len(data):,} bytes); copy or export the image again"
        )
    return f"is not a {', '.join(formats)} image (it starts with {data[:12]!r})"
