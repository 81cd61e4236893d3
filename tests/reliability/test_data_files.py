"""Damaged IDX files are a clean DataError naming the file, also under `python -O` (where
asserts vanish), and a header that lies about its size cannot make the reader allocate it."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import tracemalloc

import pytest

from cnnkit.data.idx import read_idx
from cnnkit.errors import DataError

from .conftest import subprocess_env


def _header(type_code: int = 0x08, dims: tuple[int, ...] = (2, 2, 2)) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


# name -> (file content, part of the expected message)
CASES = {
    "bad-magic": (b"\x01\x02\x08\x03" + _header()[4:] + b"\0" * 8, "bad magic number"),
    "text-file": (b"label,image\n3,0 0 0\n", "bad magic number"),
    "unknown-type": (_header(type_code=0x07) + b"\0" * 8, "unknown IDX type code 0x07"),
    "zero-dims": (bytes([0, 0, 8, 0]), "0 dimensions declared"),
    "many-dims": (bytes([0, 0, 8, 9]) + b"\0" * 36, "9 dimensions declared"),
    "huge-dims": (_header(dims=(4_000_000_000, 4000, 4000)), "byte limit"),
    "huge-dims-float64": (_header(type_code=0x0E, dims=(100_000, 1000, 1000)), "byte limit"),
    "header-cut": (_header()[:9], "header ends before its 3 dimension sizes"),
    "short-payload": (_header(dims=(60000, 28, 28)) + b"\0" * 100, "payload is 100 bytes but dims"),
    "empty-payload": (_header(), "payload is 0 bytes"),
    "trailing-payload": (_header() + b"\0" * 9, "trailing bytes"),
    "short-payload-gz": (gzip.compress(_header(dims=(10, 28, 28)) + b"\0" * 50), "payload is 50 bytes"),
    "trailing-payload-gz": (gzip.compress(_header() + b"\0" * 8 + b"extra"), "trailing bytes"),
    "corrupt-gzip": (gzip.compress(_header() + b"\0" * 8)[:-9], "cannot be read as IDX"),
    "empty": (b"", "too short"),
}

_CHILD = r"""
import json, sys
assert sys.flags.optimize >= 1
try:
    assert False  # under -O this line does nothing
except AssertionError:
    sys.exit("asserts are active: not running under -O")
from cnnkit.data.idx import read_idx
results = {}
for name, path in json.loads(sys.argv[1]).items():
    try:
        read_idx(path)
        results[name] = ["no error", ""]
    except Exception as exc:
        results[name] = [type(exc).__name__, str(exc)]
print(json.dumps(results))
"""


def _write_cases(folder):
    paths = {}
    for name, (content, _) in CASES.items():
        path = folder / (f"{name}-idx3-ubyte.gz" if name.endswith("gz") else f"{name}-idx3-ubyte")
        path.write_bytes(content)
        paths[name] = str(path)
    return paths


def test_damaged_idx_files_are_clean_data_errors_in_process(tmp_path):
    for name, path in _write_cases(tmp_path).items():
        with pytest.raises(DataError, match=CASES[name][1]) as info:
            read_idx(path)
        assert path in str(info.value), name


def test_damaged_idx_files_are_clean_data_errors_under_python_O(tmp_path):
    paths = _write_cases(tmp_path)
    result = subprocess.run(
        [sys.executable, "-O", "-c", _CHILD, json.dumps(paths)],
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout.strip().splitlines()[-1])
    for name, (kind, message) in results.items():
        assert kind == "DataError", (name, kind, message)
        assert CASES[name][1] in message and paths[name] in message, (name, message)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_a_header_that_lies_about_its_size_is_not_allocated(tmp_path, compressed):
    # 116 bytes on disk whose header declares 1.5 GB of pixels (under the 2 GB limit).
    data = _header(dims=(1_000_000, 28, 56)) + b"\0" * 100
    path = tmp_path / ("liar-idx3-ubyte.gz" if compressed else "liar-idx3-ubyte")
    path.write_bytes(gzip.compress(data) if compressed else data)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="payload is 100 bytes but dims"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2, f"reading a 116-byte file allocated {peak / 1024**2:.0f} MB"
