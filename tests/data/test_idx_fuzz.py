"""Fuzzing the IDX reader: whatever the bytes, only the documented DataError escapes."""

from __future__ import annotations

import gzip
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnkit.data.idx import read_idx, write_idx
from cnnkit.errors import DataError

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _check(path) -> None:
    try:
        out = read_idx(path, max_bytes=1 << 20)
    except DataError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(out, np.ndarray)


@FUZZ
@given(blob=st.binary(max_size=200))
def test_random_bytes(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("idx") / "random-ubyte"
    path.write_bytes(blob)
    _check(path)


@FUZZ
@given(
    type_code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]),
    dims=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 6), min_size=0, max_size=5),
    payload=st.binary(max_size=300),
    gz=st.booleans(),
)
def test_plausible_headers(tmp_path_factory, type_code, dims, payload, gz):
    """Headers that look right with any dims and payload, plain or gzipped."""
    data = bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload
    path = tmp_path_factory.mktemp("idx") / "plausible-ubyte"
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    _check(path)


@FUZZ
@given(data=st.data())
def test_damaged_real_gzip_files(tmp_path_factory, data):
    """A valid gzipped IDX file with flipped bytes or cut short (corrupt deflate streams)."""
    folder = tmp_path_factory.mktemp("idx")
    good = folder / "good-ubyte.gz"
    write_idx(good, np.arange(6 * 7 * 7, dtype=np.uint8).reshape(6, 7, 7))
    blob = bytearray(good.read_bytes())
    if data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 6))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    else:
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    path = folder / "damaged-ubyte.gz"
    path.write_bytes(bytes(blob))
    _check(path)
