"""The image decoder against numpy reference conversions, on real photos in every format.

Every file is written here with Pillow from scikit-learn's sample photos (china.jpg,
flower.jpg), shrunk so that the tests stay fast. References are computed independently with
numpy from the pixels that were written.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile
from sklearn.datasets import load_sample_image

from cnnkit.data.image_io import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    decode_image,
    find_images,
    load_image,
    open_image,
    to_array,
)
from cnnkit.errors import DataError

H, W = 48, 72  # small but real: the photos resized, aspect ratio 2:3 like china.jpg


@pytest.fixture(scope="module")
def china() -> np.ndarray:
    """uint8 [48, 72, 3] of scikit-learn's china.jpg."""
    return np.asarray(Image.fromarray(load_sample_image("china.jpg")).resize((W, H), Image.BILINEAR))


@pytest.fixture(scope="module")
def flower() -> np.ndarray:
    return np.asarray(Image.fromarray(load_sample_image("flower.jpg")).resize((W, H), Image.BILINEAR))


def _luma_ref(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, rounded half up (float reference)."""
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    return np.floor(y + 0.5 + 1e-9).astype(np.uint8)


def _composite_ref(color: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.floor(color * a + bg * (1 - a) + 0.5).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written byte by byte (Pillow cannot write 16-bit colour)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    ("suffix", "options"),
    [(".png", {}), (".bmp", {}), (".tiff", {}), (".webp", {"lossless": True})],
)
def test_lossless_formats_round_trip_exactly(tmp_path, china, suffix, options):
    path = tmp_path / f"china{suffix}"
    Image.fromarray(china).save(path, **options)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, china)


def test_jpeg_matches_the_decoded_pixels(tmp_path, china):
    path = tmp_path / "china.jpg"
    Image.fromarray(china).save(path, quality=90)
    reference = np.asarray(Image.open(path))  # JPEG is lossy: the reference is its decode
    np.testing.assert_array_equal(load_image(path), reference)


def test_gif_first_frame_through_the_palette(tmp_path, china, flower):
    frames = [Image.fromarray(a).quantize(64) for a in (china, flower)]
    path = tmp_path / "two.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as gif:
        assert gif.n_frames == 2
        indices = np.asarray(gif)
        palette = np.asarray(gif.getpalette(), dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(load_image(path), palette[indices])


def test_grayscale_file_and_channel_adaptation(tmp_path, china):
    gray = _luma_ref(china)
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    np.testing.assert_array_equal(load_image(path, channels=None), gray[..., None])
    np.testing.assert_array_equal(load_image(path, channels=3), np.repeat(gray[..., None], 3, 2))
    rgb_path = tmp_path / "rgb.png"
    Image.fromarray(china).save(rgb_path)
    np.testing.assert_array_equal(load_image(rgb_path, channels=1), gray[..., None])


def test_rgba_composited_on_the_background(tmp_path, china):
    rng = np.random.default_rng(0)
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([china, alpha])).save(path)
    for bg in [(255, 255, 255), (0, 128, 255)]:
        ref = _composite_ref(china.astype(np.float64), alpha, np.asarray(bg, np.float64))
        np.testing.assert_array_equal(load_image(path, background=bg), ref)


def test_palette_with_transparency(tmp_path, china):
    pal = Image.fromarray(china).quantize(32)
    pal.info["transparency"] = 0
    path = tmp_path / "pal.png"
    pal.save(path, transparency=0)
    with Image.open(path) as im:
        indices = np.asarray(im)
        palette = np.asarray(im.getpalette(), dtype=np.uint8).reshape(-1, 3)
    ref = palette[indices].copy()
    ref[indices == 0] = 255  # index 0 is transparent -> white background
    np.testing.assert_array_equal(load_image(path), ref)


def test_la_and_gray_trns(tmp_path, china):
    gray = _luma_ref(china)
    alpha = np.where(gray > 100, 255, 0).astype(np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([gray, alpha]), mode=None).convert("LA").save(path)
    ref = np.where(alpha == 255, gray, 255).astype(np.uint8)[..., None]
    np.testing.assert_array_equal(load_image(path, channels=None), ref)
    trns = tmp_path / "trns.png"
    Image.fromarray(gray).save(trns, transparency=int(gray[0, 0]))
    ref = np.where(gray == gray[0, 0], 255, gray).astype(np.uint8)[..., None]
    np.testing.assert_array_equal(load_image(trns, channels=None), ref)


def test_cmyk_uses_the_ink_formula(tmp_path):
    rng = np.random.default_rng(1)
    cmyk = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    path = tmp_path / "cmyk.tiff"
    Image.frombytes("CMYK", (W, H), cmyk.tobytes()).save(path)
    c, k = cmyk[..., :3].astype(np.float64), cmyk[..., 3:].astype(np.float64)
    ref = np.floor((255 - c) * (255 - k) / 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(load_image(path), ref)


def test_cmyk_jpeg_decodes(tmp_path, china):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(china).convert("CMYK").save(path, quality=95)
    out = load_image(path)
    # Lossy CMYK round trip: close to the photo, not equal.
    assert out.shape == china.shape and np.abs(out.astype(int) - china).mean() < 6


# EXIF orientation -> how the stored pixels must be turned to be shown upright.
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_applied(tmp_path, china, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(china).save(path, exif=exif)
    np.testing.assert_array_equal(load_image(path), ORIENTATIONS[orientation](china))


def test_exif_rotated_jpeg(tmp_path, china):
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held upright: stored sideways
    path = tmp_path / "phone.jpg"
    Image.fromarray(china).save(path, exif=exif, quality=92)
    stored = np.asarray(Image.open(path))
    out = load_image(path)
    assert out.shape == (W, H, 3)
    np.testing.assert_array_equal(out, np.rot90(stored, -1))


def test_16_bit_gray_is_scaled_not_clipped(tmp_path, china):
    gray16 = (_luma_ref(china).astype(np.uint16) * 257 + np.uint16(100)).clip(0, 65535).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(gray16).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    out = load_image(path, channels=None)
    np.testing.assert_array_equal(out, (gray16 >> 8).astype(np.uint8)[..., None])
    assert out.max() > 200 and len(np.unique(out)) > 50  # clipping would give all 255


def test_16_bit_rgb_and_rgba_png(tmp_path, china):
    rgb16 = (china.astype(np.uint16) * 257).astype(">u2")
    rows = b"".join(b"\x00" + rgb16[y].tobytes() for y in range(H))
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png(W, H, 16, 2, rows))
    np.testing.assert_array_equal(load_image(path), china)  # (x * 257) >> 8 == x
    alpha16 = np.full((H, W, 1), 65535, dtype=">u2")
    alpha16[: H // 2] = 0
    rgba16 = np.concatenate([rgb16, alpha16], axis=2).astype(">u2")
    rows = b"".join(b"\x00" + rgba16[y].tobytes() for y in range(H))
    path = tmp_path / "rgba16.png"
    path.write_bytes(_png(W, H, 16, 6, rows))
    ref = china.copy()
    ref[: H // 2] = 255
    np.testing.assert_array_equal(load_image(path), ref)


# ---------------------------------------------------------------------------- hardening
def test_huge_png_header_rejected_before_decoding(tmp_path, monkeypatch):
    decoded = []  # every pixel decode goes through ImageFile.load
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or real_load(self))
    path = tmp_path / "bomb.png"
    # 30000 × 30000 declared, a few bytes of data: decoding would need 2.7 GB.
    path.write_bytes(_png(30000, 30000, 8, 2, b"\x00" * 10))
    with pytest.raises(DataError, match=r"bomb\.png.*decompression-bomb"):
        load_image(path)
    assert decoded == []
    # Under Pillow's limit but over cnnkit's: refused from the header, not by a failed decode.
    path = tmp_path / "big.png"
    path.write_bytes(_png(9000, 9000, 8, 2, b"\x00" * 10))
    with pytest.raises(DataError, match=r"big\.png: header declares 9,000×9,000.*pixel limit"):
        load_image(path)
    assert MAX_PIXELS < 9000 * 9000
    assert decoded == []
    path.write_bytes(_png(2, 2, 8, 2, b"\x00" + b"\x10" * 6 + b"\x00" + b"\x20" * 6))
    assert load_image(path).shape == (2, 2, 3) and decoded  # the spy sees a real decode


def test_bytes_in_memory_decode_like_the_file(tmp_path, china):
    path = tmp_path / "china.png"
    Image.fromarray(china).save(path)
    data = path.read_bytes()
    assert np.array_equal(to_array(decode_image(data, "upload")), china)
    assert np.array_equal(to_array(decode_image(data, "upload")), load_image(path))
    with pytest.raises(DataError, match=r"^upload: header declares 9,000×9,000"):
        decode_image(_png(9000, 9000, 8, 2, b"\x00" * 10), "upload")
    with pytest.raises(DataError, match=r"^upload: .*over the 100-byte limit"):
        decode_image(data, "upload", max_bytes=100)
    with pytest.raises(DataError, match=r"^upload: is empty"):
        decode_image(b"", "upload")
    with pytest.raises(DataError, match=r"^upload: is PDF"):
        decode_image(b"%PDF-1.7\n", "upload")


def test_bomb_warning_is_an_error_and_limits_are_checked(tmp_path, china, monkeypatch):
    path = tmp_path / "c.png"
    Image.fromarray(china).save(path)
    with pytest.raises(DataError, match=r"c\.png: header declares 72×48 = 3,456 pixels"):
        load_image(path, max_pixels=1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # Pillow warns between 1× and 2×
    with pytest.raises(DataError, match=r"c\.png: refused before decoding"):
        load_image(path, max_pixels=2000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS is None"):
        load_image(path)


def test_file_size_cap(tmp_path, china):
    path = tmp_path / "c.bmp"
    Image.fromarray(china).save(path)
    with pytest.raises(DataError, match=r"c\.bmp: [\d,]+ bytes is over the 1,000-byte limit"):
        load_image(path, max_bytes=1000)


def test_bad_files_are_errors_naming_the_file(tmp_path, china):
    good = io.BytesIO()
    Image.fromarray(china).save(good, "JPEG", quality=90)
    cases = {
        "truncated.jpg": (good.getvalue()[: len(good.getvalue()) // 2], "truncated or corrupt JPEG"),
        "empty.png": (b"", "empty"),
        "notes.png": (b"just some text, not a picture\n", "is not a JPEG, PNG"),
        "psd.png": (
            b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03" + struct.pack(">II", 4, 4) + b"\x00\x08\x00\x03",
            "PSD",
        ),
        "fits.png": (b"SIMPLE  =                    T" + b" " * 50, "FITS"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    eps = tmp_path / "photo.eps"
    Image.fromarray(china).save(eps)
    cases["photo.eps"] = (None, "EPS")
    for name, (_, message) in cases.items():
        with pytest.raises(DataError, match=message) as info:
            load_image(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name))
    with pytest.raises(DataError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(DataError, match="is a folder"):
        load_image(tmp_path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WebP"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("GIF", "GIF")],
)
@pytest.mark.parametrize("keep", [16, 40])
def test_a_file_cut_inside_its_header_is_named_truncated_not_unknown(tmp_path, china, fmt, name, keep):
    """A real file of every allowed format cut after ``keep`` bytes: whether Pillow fails inside
    the header or cannot identify the file at all, the message names the format and the damage,
    never 'is not a ... image' (the file does start with that format's signature)."""
    data = io.BytesIO()
    Image.fromarray(china).save(data, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data.getvalue()[:keep])
    with pytest.raises(DataError, match=f"truncated or corrupt {name} ") as info:
        load_image(path)
    assert str(info.value).startswith(str(path)) and "is not a" not in str(info.value)


def test_truncated_png_and_restricted_formats(tmp_path, china):
    data = io.BytesIO()
    Image.fromarray(china).save(data, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data.getvalue()[:-200])
    with pytest.raises(DataError, match=r"cut\.png: truncated or corrupt PNG"):
        load_image(path)
    full = tmp_path / "full.png"
    full.write_bytes(data.getvalue())
    with pytest.raises(DataError, match="is not a JPEG image"):
        open_image(full, formats=["JPEG"])
    with pytest.raises(ValueError, match="subset of"):
        open_image(full, formats=["EPS"])


def test_find_images_walks_folders(tmp_path, china):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    (tmp_path / "empty").mkdir()
    for rel in ["a/1.jpg", "a/b/2.PNG", "a/.hidden/3.png", "a/.4.png", "a/notes.txt"]:
        (tmp_path / rel).write_bytes(b"x")
    found = find_images([tmp_path / "a", tmp_path / "empty", tmp_path / "nope.png", tmp_path / "a/notes.txt"])
    assert [(p.relative_to(tmp_path).as_posix(), problem is None) for p, problem in found] == [
        ("a/1.jpg", True),
        ("a/b/2.PNG", True),
        ("empty", False),
        ("nope.png", False),
        ("a/notes.txt", True),  # named explicitly: tried, so that a bad file is reported
    ]
    assert (
        found[2][1]
        == f"{tmp_path / 'empty'}: no image files in this folder ({', '.join(sorted(IMAGE_EXTENSIONS))})"
    )


def test_a_folder_of_phone_photos_says_what_it_holds_and_the_fix(tmp_path):
    """HEIC photos (an iPhone's default) are not read: a folder of them says so, and how to go on."""
    photos = tmp_path / "photos"
    photos.mkdir()
    heic = b"\x00\x00\x00\x18ftypheic" + bytes(16)
    for name in ("IMG_0001.HEIC", "IMG_0002.heic", "notes.txt"):
        (photos / name).write_bytes(heic)
    [(path, problem)] = find_images([photos])
    assert path == photos and problem.endswith(
        "its 3 other file(s) end in .heic, .txt: convert images to JPEG or PNG"
    )
    with pytest.raises(
        DataError, match=r"IMG_0001\.HEIC: is HEIC, which cnnkit does not read .*convert it to JPEG"
    ):
        load_image(photos / "IMG_0001.HEIC")


# ---------------------------------------------------------------------------- fuzz
def _seed_files(china: np.ndarray) -> list[bytes]:
    small = Image.fromarray(china[:16, :16])
    out = []
    for fmt, options in [("PNG", {}), ("JPEG", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {})]:
        buffer = io.BytesIO()
        small.save(buffer, fmt, **options)
        out.append(buffer.getvalue())
    return out


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzz_only_data_errors_escape(tmp_path_factory, china, data):
    """Mutated real files and random bytes: the loader returns pixels or raises DataError."""
    seeds = _seed_files(china)
    seed = data.draw(st.sampled_from(seeds))
    kind = data.draw(st.sampled_from(["flip", "cut", "random", "splice"]))
    blob = bytearray(seed)
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    elif kind == "cut":
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    elif kind == "random":
        blob = bytearray(data.draw(st.binary(max_size=300)))
    else:
        at = data.draw(st.integers(0, len(blob)))
        blob[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    path = tmp_path_factory.mktemp("fuzz") / "input.img"
    path.write_bytes(bytes(blob))
    try:
        out = load_image(path, max_pixels=1_000_000)
    except DataError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


def test_paths_are_accepted_as_str_and_path(tmp_path, china):
    path = tmp_path / "c.png"
    Image.fromarray(china).save(path)
    np.testing.assert_array_equal(load_image(str(path)), load_image(Path(path)))


def test_special_files_are_not_read(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(DataError, match=r"pipe\.png: is not a regular file"):
        load_image(fifo)


def test_float_images_are_refused_by_name(tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)).save(path)
    with pytest.raises(DataError, match=r"depth\.tiff: pixel mode 'F' is not supported"):
        load_image(path)
