"""What an image file is, from its first bytes: for the message when Pillow cannot identify it.

The decoder (:mod:`cnnkit.data.image_io`) lets Pillow pick the plugin by content among the
allowed formats. When none of them takes the file, the bytes say why: a format cnnkit refuses
(PDF, EPS, HEIC, ...), a damaged file of an allowed format (its signature is right but the
header after it is not), or something else altogether.
"""

from __future__ import annotations

from collections.abc import Sequence

# Magic numbers of formats people try that cnnkit refuses, to say what the file is.
REFUSED_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
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
# Signatures of the formats cnnkit reads (by the names messages use), to name a damaged file.
ALLOWED_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG", "PNG"),
    (0, b"\xff\xd8", "JPEG"),
    (8, b"WEBP", "WebP"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
)


def _match(data: bytes, table: tuple[tuple[int, bytes, str], ...]) -> str | None:
    return next((name for at, magic, name in table if data[at : at + len(magic)] == magic), None)


def signature_format(data: bytes) -> str | None:
    """The allowed format whose signature ``data`` starts with (``"PNG"``, ``"WebP"``...), if any."""
    return _match(data, ALLOWED_SIGNATURES)


def describe_unknown(data: bytes, formats: Sequence[str]) -> str:
    """Why no allowed plugin took ``data`` (the rest of a message that starts with the file's
    name): a refused format by name, a damaged file of an allowed format, or the first bytes."""
    refused = _match(data, REFUSED_SIGNATURES)
    if refused is not None:
        return f"is {refused}, which cnnkit does not read (allowed: {', '.join(formats)})"
    name = signature_format(data)
    if name is not None and name.upper() in formats:
        return (
            f"truncated or corrupt {name} file: it starts with the {name} signature but has no "
            f"readable header ({len(data):,} bytes); copy or export the image again"
        )
    return f"is not a {', '.join(formats)} image (it starts with {data[:12]!r})"
