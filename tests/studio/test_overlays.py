"""Localization, detection and segmentation runs in the studio: their boxes and masks come back in
the uploaded photo's own pixels. Checked on a 160 x 96 photo (the runs' canvas: 32 x 32) against
each model run by hand on the same input, scaled back by hand (x 5 across, x 3 down) and resized
with F.interpolate; wrong-task requests and foreign ids get JSON errors."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.runs.folder import load_run

H, W, CANVAS = 96, 160, 32
SCALE = torch.tensor([W / CANVAS, H / CANVAS] * 2)  # 5 across, 3 down


def unrle(payload: dict) -> np.ndarray:
    """The studio's run-length grid back to an array (runs of ``values`` in row-major order)."""
    values = np.frombuffer(base64.b64decode(payload["values"]), np.uint8)
    runs = np.frombuffer(base64.b64decode(payload["runs"]), "<u4")
    return np.repeat(values, runs).reshape(payload["shape"])


@pytest.fixture(scope="module")
def client(localize_run_dir, detect_run_dir, maskrcnn_run_dir, segment_run_dir):
    from fastapi.testclient import TestClient

    from cnnkit.studio import create_app, load_catalog

    targets = [localize_run_dir, detect_run_dir, maskrcnn_run_dir, segment_run_dir]
    with TestClient(create_app(load_catalog([str(t) for t in targets])), base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture(scope="module")
def canvas_input(wide_photo) -> torch.Tensor:
    """The photo stretched to the 32 x 32 canvas as `cnnkit detect` reads it: float [1, 1, 32, 32]."""
    from cnnkit.data.annotations import resize_for_model

    return torch.from_numpy(resize_for_model(wide_photo[1][None], CANVAS))[None].float() / 255


def upload(client, model: str, data: bytes) -> dict:
    response = client.post(f"/api/models/{model}/inputs", content=data)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["image"] == {"height": H, "width": W} and result["pixels"]["shape"] == [CANVAS, CANVAS, 1]
    return result


def test_the_models_list_every_task(client):
    models = {m["id"]: m for m in client.get("/api/models").json()["models"]}
    assert [(m["task"], m["instance"]) for m in models.values()] == [
        ("localize", False), ("detect", False), ("segment", True), ("segment", False),
    ]  # fmt: skip
    classes = models["3-maskrcnn-run"]["classes"]
    assert classes[0] == "background" and len(classes) == 11
    assert models["2-detect-run"]["input"] == {"channels": 1, "height": CANVAS, "width": CANVAS}


def test_localization_box_on_the_photo(client, wide_photo, canvas_input, localize_run_dir):
    result = upload(client, "1-localize-run", wide_photo[0])
    model, record = load_run(localize_run_dir, device="cpu")
    with torch.no_grad():
        out = model(canvas_input)
    score, label = out.logits.softmax(1)[0].max(0)
    want = out.boxes[0] * CANVAS * SCALE  # fractions of the canvas -> canvas pixels -> photo pixels
    (got,) = result["detections"]
    assert np.allclose(got["box"], want.numpy(), atol=1e-3)
    assert got["score"] == pytest.approx(float(score), abs=1e-6)
    assert (got["index"], got["class"]) == (int(label), record["class_names"][int(label)])
    assert result["top"] == [] and "segmentation" not in result


def test_detection_boxes_on_the_photo(client, wide_photo, canvas_input, detect_run_dir):
    result = upload(client, "2-detect-run", wide_photo[0])
    model, _ = load_run(detect_run_dir, device="cpu")
    with torch.no_grad():
        want = model.predict(canvas_input, score_threshold=0.001, nms_iou=0.5, class_agnostic=True)[0]
    got = result["detections"]
    assert len(got) == len(want["boxes"]) > 0
    assert np.allclose([d["box"] for d in got], (want["boxes"] * SCALE).numpy(), atol=1e-3)
    assert np.allclose([d["score"] for d in got], want["scores"].numpy(), atol=1e-6)
    boxes = np.array([d["box"] for d in got])
    assert boxes[:, 2].max() > CANVAS and (boxes[:, [0, 2]] <= W).all() and (boxes[:, [1, 3]] <= H).all()


def test_mask_rcnn_boxes_and_masks_on_the_photo(client, wide_photo, canvas_input, maskrcnn_run_dir):
    result = upload(client, "3-maskrcnn-run", wide_photo[0])
    model, record = load_run(maskrcnn_run_dir, device="cpu")
    with torch.no_grad():
        want = model([canvas_input[0]])[0]
    got = result["detections"]
    assert len(got) == len(want["scores"]) > 0  # a 1-epoch run: boxes of low score, but boxes
    assert np.allclose([d["box"] for d in got], (want["boxes"] * SCALE).numpy(), atol=1e-3)
    assert np.allclose([d["score"] for d in got], want["scores"].numpy(), atol=1e-6)
    assert [d["class"] for d in got] == [record["class_names"][i] for i in want["labels"]]
    probs = F.interpolate(want["masks"], size=(H, W), mode="bilinear", align_corners=False)[:, 0].numpy()
    drawn = 0
    for d, p in zip(got, probs):
        full = np.zeros((H, W), dtype=bool)
        if d["mask"] is not None:
            x0, y0, x1, y1 = d["mask"]["box"]
            full[y0:y1, x0:x1] = unrle(d["mask"]).astype(bool)
            drawn += 1
        sure = np.abs(p - 0.5) > 1e-5  # pixels on the threshold itself may go either way
        assert np.array_equal(full[sure], (p > 0.5)[sure])
    assert drawn > 0


def test_semantic_labels_on_the_photo(client, wide_photo, canvas_input, segment_run_dir):
    result = upload(client, "4-segment-run", wide_photo[0])
    model, record = load_run(segment_run_dir, device="cpu")
    with torch.no_grad():
        labels = model(canvas_input)[0].argmax(0)
    want = F.interpolate(labels[None, None].float(), size=(H, W), mode="nearest-exact")[0, 0].long().numpy()
    seg = result["segmentation"]
    assert seg["labels"]["shape"] == [H, W] and np.array_equal(unrle(seg["labels"]), want)
    counts = np.bincount(want.ravel(), minlength=len(record["class_names"]))
    assert [(c["class"], c["share"]) for c in seg["classes"]] == [
        (record["class_names"][i], n / want.size) for i, n in enumerate(counts) if n
    ]


def test_wrong_task_and_foreign_ids_get_json_errors(client, wide_photo, expect_errors):
    localize = upload(client, "1-localize-run", wide_photo[0])["input_id"]
    mask = upload(client, "3-maskrcnn-run", wide_photo[0])["input_id"]
    detect = upload(client, "2-detect-run", wide_photo[0])["input_id"]
    segment = upload(client, "4-segment-run", wide_photo[0])["input_id"]
    cases = [
        (f"/api/models/1-localize-run/inputs/{localize}/gradcam", 400, "is a localize run"),
        (f"/api/models/2-detect-run/inputs/{detect}/gradcam", 400, "is a detect run"),
        (f"/api/models/4-segment-run/inputs/{segment}/gradcam", 400, "is a segment run"),
        (f"/api/models/3-maskrcnn-run/inputs/{mask}/gradcam", 400, "is a segment run"),
        (f"/api/models/3-maskrcnn-run/inputs/{localize}/predict", 404, "no input with id"),
        (f"/api/models/1-localize-run/inputs/{mask}/layers/0/maps", 404, "no input with id"),
        ("/api/models/5-maskrcnn-run/inputs/x/predict", 404, "no model with id '5-maskrcnn-run'"),
        (f"/api/models/3-maskrcnn-run/inputs/{mask}/layers/99/maps", 404, "layers 0.."),
    ]
    expect_errors(client, cases)
    for model, input_id in (("2-detect-run", detect), ("3-maskrcnn-run", mask)):  # layers as any model's
        maps = client.get(f"/api/models/{model}/inputs/{input_id}/layers/0/maps").json()
        assert maps["shape"][1:] == [CANVAS, CANVAS]
    again = client.get(f"/api/models/3-maskrcnn-run/inputs/{mask}/predict").json()
    assert again["image"] == {"height": H, "width": W} and len(again["detections"]) > 0


@pytest.mark.parametrize("mode", ["resize", "crop", "pad"])
def test_the_frame_undoes_each_resize(mode):
    """A bright dot on a 45 x 70 photo lands, after resize_image to 32 x 32, where Preprocess.frame
    says; and the frame's inverse brings the canvas dot back to the photo dot."""
    from cnnkit.data.preprocess import Preprocess

    prep = Preprocess(size=(32, 32), channels=1, resize=mode, interpolation="nearest", mean=(0,), std=(1,))
    photo = np.zeros((45, 70, 1), dtype=np.uint8)
    photo[20:26, 30:38] = 255  # 8 wide, 6 high: centre (34, 23)
    canvas = prep.pixels(photo)[..., 0]
    rows, cols = np.nonzero(canvas)
    left, top, sx, sy = prep.frame(45, 70)
    centre = ((cols.min() + cols.max() + 1) / 2, (rows.min() + rows.max() + 1) / 2)
    assert left + centre[0] * sx == pytest.approx(34, abs=sx)
    assert top + centre[1] * sy == pytest.approx(23, abs=sy)
    expected = {"resize": (0, 0, 70 / 32, 45 / 32), "crop": (12.5, 0, 45 / 32, 45 / 32)}
    if mode in expected:
        assert (left, top, sx, sy) == pytest.approx(expected[mode])
    else:  # letterbox: 70 x 45 -> 32 x 21 (rounded), 5 rows of margin above
        assert (left, top, sx, sy) == pytest.approx((0, -5 * 45 / 21, 70 / 32, 45 / 21))
