"""The IDX reader on the real Fashion-MNIST files and on damaged copies of them."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest

from cnnkit.data import find_data_dir, read_idx, read_idx_pair, write_idx
from cnnkit.errors import DataError


@pytest.fixture(scope="module")
def real_dir():
    return find_data_dir()


def test_real_files_have_published_shapes(real_dir):
    images = read_idx(real_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(real_dir / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10  # the test set is balanced
    # Compare with a reading that only uses the published layout: 16-byte header then pixels.
    raw = gzip.decompress((real_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    np.testing.assert_array_equal(images[0].ravel(), np.frombuffer(raw[16 : 16 + 784], dtype=np.uint8))


def test_round_trip_plain_and_gzip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(read_idx(tmp_path / name), arr)
    floats = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    write_idx(tmp_path / "f.idx", floats)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), floats)


def _header(type_code=0x08, dims=(2, 2, 2)):
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x02\x08\x03" + b"\0" * 20, "bad magic number"),
        (_header(type_code=0x07) + b"\0" * 8, "unknown IDX type code 0x07"),
        (_header(dims=(60000, 28, 28)) + b"\0" * 100, "payload is 100 bytes but dims"),
        (_header() + b"\0" * 9, "trailing bytes"),
        (_header(dims=(4_000_000_000, 4000, 4000)), "byte limit"),
        (b"\0\0", "too short"),
        (b"", "too short"),
    ],
)
def test_malformed_files_name_the_file_and_problem(tmp_path, data, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_is_a_data_error(tmp_path, real_dir):
    good = (real_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=str(path.name)):
        read_idx(path)


def test_pair_checks_counts_and_label_range(tmp_path):
    write_idx(tmp_path / "img", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "lab", np.array([0, 1], np.uint8))
    with pytest.raises(DataError, match="3 images but .* 2 labels"):
        read_idx_pair(tmp_path / "img", tmp_path / "lab")
    write_idx(tmp_path / "lab", np.array([0, 1, 10], np.uint8))
    with pytest.raises(DataError, match="label 10 is outside 0..9"):
        read_idx_pair(tmp_path / "img", tmp_path / "lab")


def test_checks_survive_python_O(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x02\x08\x01" + b"\0" * 8)
    code = (
        "import sys\nfrom cnnkit.data import read_idx\nfrom cnnkit.errors import DataError\n"
        f"try:\n    read_idx({str(path)!r})\n"
        "except DataError as e:\n    print('DataError', e)\n    sys.exit(0)\nsys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "bad magic number" in result.stdout


def test_empty_dim_with_absurd_others_is_refused(tmp_path):
    # Found by the fuzz test: 0 x 3e9 x 3e9 has no payload, but no array can have that shape.
    path = tmp_path / "odd-idx3-ubyte"
    path.write_bytes(_header(dims=(0, 3_036_988_439, 3_037_012_561)))
    with pytest.raises(DataError, match="byte limit"):
        read_idx(path)
