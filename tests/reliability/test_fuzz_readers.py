"""Requirement 9: property-based tests where files come in. Whatever the COCO JSON, YOLO folder,
mask folder or config.json holds, only the documented error types escape and every message
names its file (as the IDX and image fuzzers in tests/data do)."""

from __future__ import annotations

import io
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnkit.data.annotations import read_coco, read_yolo
from cnnkit.data.masks import read_mask_folder
from cnnkit.errors import DataError, UsageError
from cnnkit.runs.config import RunConfig, SceneConfig, SegmentConfig
from cnnkit.runs.folder import load_run, read_run

from .test_hostile_data import png_header_only

FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
NAMES = st.sampled_from(["a.png", "b.png", "../a.png", "/etc/passwd", "sub/../a.png", "", ".", "a.png\0"])
NUMBER = st.integers(-5, 100) | st.floats(-5, 100) | st.sampled_from([float("nan"), float("inf"), True, "3"])


def _png(width: int = 64, height: int = 48, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 3).save(buffer, format="PNG")
    return buffer.getvalue()


def _coco_docs():
    image = st.fixed_dictionaries(
        {
            "id": st.integers(0, 3) | NUMBER,
            "file_name": NAMES,
            "width": NUMBER | st.just(64),
            "height": NUMBER | st.just(48),
        }
    )
    annotation = st.fixed_dictionaries(
        {
            "id": st.integers(0, 5),
            "image_id": st.integers(0, 3) | NUMBER,
            "category_id": st.integers(0, 3) | NUMBER,
            "bbox": st.lists(NUMBER, min_size=0, max_size=5) | JSON,
            "iscrowd": st.sampled_from([0, 1, 0]),
        }
    )
    category = st.fixed_dictionaries({"id": st.integers(0, 3) | NUMBER, "name": st.text(max_size=4) | JSON})
    return st.fixed_dictionaries(
        {
            "images": st.lists(image, max_size=3) | JSON,
            "annotations": st.lists(annotation, max_size=4) | JSON,
            "categories": st.lists(category, max_size=3) | JSON,
        }
    )


@FUZZ
@given(doc=_coco_docs() | JSON, raw=st.none() | st.binary(max_size=64))
def test_coco_reader(tmp_path_factory, doc, raw):
    folder = tmp_path_factory.mktemp("coco")
    (folder / "a.png").write_bytes(_png())
    (folder / "b.png").write_bytes(b"%!PS-Adobe-3.0\n")
    path = folder / "instances.json"
    path.write_bytes(raw if raw is not None else json.dumps(doc).encode())
    try:
        data = read_coco(path)
    except DataError as exc:
        assert str(path) in str(exc)
    else:
        assert all(record.path.resolve().parent == folder.resolve() for record in data.images)


LINE = st.lists(
    st.sampled_from(["0", "1", "7", "-1", "0.5", "1e9", "nan", "inf", "x", "0.25", "0.1"]), max_size=6
).map(" ".join)


@FUZZ
@given(
    lines=st.lists(LINE, max_size=4),
    raw_label=st.none() | st.binary(max_size=32),
    classes=st.binary(max_size=16) | st.just(b"shirt\nbag\n"),
    image=st.sampled_from(["png", "eps", "empty", "big"]),
)
def test_yolo_reader(tmp_path_factory, lines, raw_label, classes, image):
    folder = tmp_path_factory.mktemp("yolo")
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    content = {"png": _png(), "eps": b"%!PS-Adobe-3.0\n", "empty": b"", "big": png_header_only(9000, 9000)}[
        image
    ]
    (folder / "images" / "a.png").write_bytes(content)
    (folder / "classes.txt").write_bytes(classes)
    label = raw_label if raw_label is not None else "\n".join(lines).encode()
    (folder / "labels" / "a.txt").write_bytes(label)
    try:
        data = read_yolo(folder)
    except DataError as exc:
        assert str(folder) in str(exc)
    else:
        assert len(data) == 1 and data.images[0].boxes.shape[1] == 4


MASK_MODES = st.sampled_from(["L", "P", "I;16", "RGB", "1", "LA"])


@FUZZ
@given(
    mode=MASK_MODES,
    values=st.integers(0, 300),
    size=st.sampled_from([(8, 6), (6, 8), (1, 1)]),
    raw=st.none() | st.binary(max_size=48),
    classes=st.none() | st.binary(max_size=16),
)
def test_mask_folder_reader(tmp_path_factory, mode, values, size, raw, classes):
    folder = tmp_path_factory.mktemp("masks")
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    Image.fromarray(np.full((6, 8), 120, np.uint8)).save(folder / "images" / "a.png")
    if raw is not None:
        (folder / "masks" / "a.png").write_bytes(raw)
    else:
        array = np.full(
            size[::-1], values if mode == "I;16" else values % 256, np.uint16 if mode == "I;16" else np.uint8
        )
        if mode == "I;16":
            Image.fromarray(array).save(folder / "masks" / "a.png")  # uint16: mode I;16
        else:
            Image.fromarray(array.astype(np.uint8)).convert(mode).save(folder / "masks" / "a.png")
    if classes is not None:
        (folder / "classes.txt").write_bytes(classes)
    try:
        data = read_mask_folder(folder)
    except DataError as exc:
        assert str(folder) in str(exc)
    else:
        assert tuple(data.masks.shape) == (1, 6, 8)


@FUZZ
@given(
    record=JSON | st.dictionaries(st.sampled_from(["task", "run", "finetune", "versions"]), JSON),
    raw=st.none() | st.binary(max_size=32),
)
def test_run_config_json(tmp_path_factory, record, raw):
    folder = tmp_path_factory.mktemp("run")
    path = folder / "config.json"
    path.write_bytes(raw if raw is not None else json.dumps(record).encode())
    try:
        load_run(read_run(folder), device="cpu")  # no weights file: at best "has no best..."
    except UsageError as exc:
        assert str(folder) in str(exc)


RUN_KEYS = [
    "task",
    "model",
    "data",
    "epochs",
    "batch_size",
    "lr",
    "seed",
    "patience",
    "head",
    "canvas",
    "monitor",
    "foo",
]


@FUZZ
@given(
    settings_=st.dictionaries(st.sampled_from(RUN_KEYS), JSON | NUMBER, max_size=5),
    kind=st.sampled_from([RunConfig, SceneConfig, SegmentConfig]),
    wrap=st.booleans(),
)
def test_config_files(tmp_path_factory, settings_, kind, wrap):
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_text(json.dumps({"run": settings_} if wrap else settings_))
    try:
        config = kind.load(path)
    except UsageError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(config, kind)
