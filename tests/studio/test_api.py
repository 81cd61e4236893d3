"""The studio's JSON API against independent computations: the shipped model run by hand,
F.conv2d / F.max_pool2d for feature maps and the kernel arithmetic, np.histogram, a hand-written
Grad-CAM; bad uploads, unknown ids and foreign hosts are refused with JSON messages."""

from __future__ import annotations

import base64
import socket
import struct
import zlib
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.models import create_model
from cnnkit.runs.folder import shipped_weights

FASHION = "1-fashion"


def decode(payload: dict) -> np.ndarray:
    """A ``u8`` grid back in its value units (to within half a step of 1/255 of its range)."""
    raw = np.frombuffer(base64.b64decode(payload["u8"]), dtype=np.uint8).reshape(payload["shape"])
    return payload["min"] + raw.astype(np.float64) / 255 * (payload["max"] - payload["min"])


@pytest.fixture(scope="module")
def client(tiny_run_dir):
    from fastapi.testclient import TestClient

    from cnnkit.studio import create_app, load_catalog

    catalog = load_catalog(["fashion", str(tiny_run_dir)])
    with TestClient(create_app(catalog), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture(scope="module")
def reference():
    """The shipped weights in a model built here, independent of the studio's loading."""
    return create_model("hongong_cnn", weights=str(shipped_weights())).eval()


def upload(client, data: bytes, model: str = FASHION, **kw) -> dict:
    response = client.post(f"/api/models/{model}/inputs", content=data, **kw)
    assert response.status_code == 200, response.text
    return response.json()


def test_models_lists_the_shipped_model_and_the_run(client, items, tiny_run_dir):
    models = client.get("/api/models").json()["models"]
    assert [m["id"] for m in models] == [FASHION, "2-tiny-run"]
    fashion, run = models
    assert fashion["classes"] == items.class_names and fashion["trained"] and not fashion["has_history"]
    assert fashion["input"] == {"channels": 1, "height": 28, "width": 28} and fashion["drawable"]
    assert run["kind"] == "run" and run["has_history"] and run["params"] == fashion["params"] == 333_526
    detail = client.get(f"/api/models/{FASHION}").json()
    names = [layer["name"] for layer in detail["layers"]]
    assert names[:4] == ["features.conv1", "features.pool1", "features.conv2", "features.pool2"]
    # The course's arithmetic: 3x3 conv -> RF 3; 2x2 pool -> 4 (jump 2); 3x3 conv -> 8; pool -> 10.
    assert [layer["receptive_field"] for layer in detail["layers"][:4]] == [[3, 3], [4, 4], [8, 8], [10, 10]]
    assert [layer["params"] for layer in detail["layers"][:3]] == [320, 0, 18_496]
    assert detail["cam_layers"] == ["features.conv1", "features.conv2"]


def test_upload_predicts_what_the_model_computes(client, items, reference):
    with torch.no_grad():
        expected = torch.softmax(reference(torch.from_numpy(items.pixels).float()[:, None] / 255), dim=1)
    for k, png in enumerate(items.png):
        result = upload(client, png, headers={"Content-Type": "image/png"})
        assert result["pixels"]["shape"] == [28, 28, 1]
        assert np.array_equal(decode(result["pixels"])[..., 0].round(), items.pixels[k])
        top = result["top"]
        probs, index = expected[k].topk(5)
        assert [t["index"] for t in top] == index.tolist()
        assert [t["class"] for t in top] == [items.class_names[i] for i in index]
        assert np.allclose([t["probability"] for t in top], probs.numpy(), atol=1e-5)
    # The first test items are easy: the shipped model (91 % on the test set) gets them right.
    assert int(expected.argmax(1)[0]) == items.labels[0] == 9


def test_feature_maps_are_the_convolution_of_the_input(client, items, reference):
    input_id = upload(client, items.png[0])["input_id"]
    maps = client.get(f"/api/models/{FASHION}/inputs/{input_id}/layers/0/maps").json()
    assert (maps["channels"], maps["shown"], maps["height"], maps["width"]) == (32, 32, 28, 28)
    raw = np.frombuffer(base64.b64decode(maps["u8"]), np.uint8).reshape(32, 28, 28).astype(np.float64)
    low, high = np.array(maps["min"])[:, None, None], np.array(maps["max"])[:, None, None]
    got = low + raw / 255 * (high - low)
    conv = reference.features.conv1
    x = torch.from_numpy(items.pixels[:1]).float()[:, None] / 255
    with torch.no_grad():
        want = F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1))[0].numpy()
    assert np.abs(got - want).max() <= (high - low).max() / 255 / 2 + 1e-6
    dense = client.get(f"/api/models/{FASHION}/inputs/{input_id}/layers/7/maps").json()
    assert dense["shape"] == [10] and dense["vector"]["shape"] == [10]


def test_pixel_shows_the_window_kernel_and_sum(client, items, reference):
    input_id = upload(client, items.png[0])["input_id"]
    x = torch.from_numpy(items.pixels[:1]).float()[:, None] / 255
    f = reference.features
    with torch.no_grad():
        pooled = F.max_pool2d(F.relu(F.conv2d(x, f.conv1.weight, f.conv1.bias, padding=1)), 2)
        conv2 = F.relu(F.conv2d(pooled, f.conv2.weight, f.conv2.bias, padding=1))
    padded = F.pad(pooled, (1, 1, 1, 1))[0]
    for channel, row, col in ((5, 7, 7), (12, 0, 3), (63, 13, 13)):
        url = f"/api/models/{FASHION}/inputs/{input_id}/layers/2/pixel?channel={channel}&row={row}&col={col}"
        p = client.get(url).json()
        window = padded[:, row : row + 3, col : col + 3]
        conv = p["conv"]
        assert conv["in_channels"] == 32 and conv["shown"] == 16 and conv["activation"] == "ReLU"
        assert np.allclose(conv["window"], window[:16].numpy(), atol=1e-6)
        assert np.allclose(conv["kernel"], f.conv2.weight[channel, :16].detach().numpy())
        total = float(((window * f.conv2.weight[channel]).sum() + f.conv2.bias[channel]).detach())
        assert conv["sum"] == pytest.approx(total, abs=1e-5)
        assert p["value"] == pytest.approx(float(conv2[0, channel, row, col]), abs=1e-5)
        assert conv["result"] == pytest.approx(max(total, 0.0), abs=1e-5)
        # conv2 pixel r sees pool rows r-1..r+1, i.e. conv1 rows 2r-2..2r+3, i.e. input rows 2r-3..2r+4.
        assert p["box"] == [2 * row - 3, 2 * col - 3, 2 * row + 4, 2 * col + 4]
        top, left, bottom, right = p["box"]
        assert p["box_clipped"] == [max(0, top), max(0, left), min(27, bottom), min(27, right)]
    pool = client.get(f"/api/models/{FASHION}/inputs/{input_id}/layers/1/pixel?channel=3&row=5&col=6").json()
    with torch.no_grad():
        relu1 = F.relu(F.conv2d(x, f.conv1.weight, f.conv1.bias, padding=1))[0, 3]
    assert np.allclose(pool["pool"]["window"], relu1[10:12, 12:14].numpy(), atol=1e-6)
    assert pool["pool"]["result"] == pytest.approx(float(relu1[10:12, 12:14].max()), abs=1e-6)
    assert pool["value"] == pool["pool"]["result"]
    # pool pixel (5, 6) takes conv1 rows 10..11, cols 12..13: input rows 9..12, cols 11..14.
    assert pool["box"] == [9, 11, 12, 14] and pool["receptive_field"] == [4, 4]


def test_weights_filters_and_histograms(client, reference):
    w = client.get(f"/api/models/{FASHION}/layers/0/weights").json()
    weight = reference.features.conv1.weight.detach().double()
    scale = float(weight.abs().max())
    assert w["shape"] == [32, 1, 3, 3] and w["filters"]["scale"] == pytest.approx(scale)
    assert np.abs(decode(w["filters"]) - weight[:, 0].numpy()).max() <= scale / 255 + 1e-9
    hist = w["histogram"]
    trained, fresh = hist["panels"]
    assert trained["label"] == "trained" and fresh["label"] == "freshly initialised"
    assert trained["counts"] == np.histogram(weight.numpy().ravel(), bins=np.array(hist["edges"]))[0].tolist()
    assert sum(fresh["counts"]) == fresh["count"] == 288
    assert trained["mean"] == pytest.approx(float(weight.mean())) and trained["std"] == pytest.approx(
        float(weight.std(unbiased=False))
    )
    # Glorot-uniform: a fresh 3x3x1 -> 32 kernel lies within +-sqrt(6 / (9 + 288)).
    assert hist["edges"][0] <= -((6 / 297) ** 0.5) * 0.5 and fresh["std"] < trained["std"]
    dense = client.get(f"/api/models/{FASHION}/layers/5/weights").json()
    assert dense["shape"] == [100, 3136] and "filters" not in dense
    error = client.get(f"/api/models/{FASHION}/layers/1/weights")
    assert error.status_code == 400 and "has no weights" in error.json()["error"]


def test_gradcam_matches_a_hand_computation(client, items, reference):
    input_id = upload(client, items.png[0])["input_id"]
    x = torch.from_numpy(items.pixels[:1]).float()[:, None] / 255
    for target in (None, 7):
        query = "" if target is None else f"?target={target}"
        cam = client.get(f"/api/models/{FASHION}/inputs/{input_id}/gradcam{query}").json()
        assert cam["layer"] == "features.pool2" and cam["target"] == (9 if target is None else target)
        assert cam["class"] == items.class_names[cam["target"]]
        f = reference.features
        acts = f.pool2(f.conv2(f.pool1(f.conv1(x))))
        logits = reference.head(acts)
        (grad,) = torch.autograd.grad(logits[0, cam["target"]], acts)
        heat = F.relu((grad.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True))
        heat = F.interpolate(heat, size=(28, 28), mode="bilinear", align_corners=False)[0, 0].detach()
        heat = ((heat - heat.min()) / (heat.max() - heat.min() + 1e-7)).numpy()
        assert np.abs(decode(cam["cam"]) - heat).max() < 0.02
    layer = client.get(f"/api/models/{FASHION}/inputs/{input_id}/gradcam?layer=0&target=2").json()
    assert layer["layer"] == "features.conv1" and layer["cam"]["shape"] == [28, 28]


def test_history_of_a_run(client, tiny_run_dir):
    import json

    history = client.get("/api/models/2-tiny-run/history").json()
    written = json.loads((tiny_run_dir / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2] and history["epochs"] == written
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(history["epochs"][0])
    assert client.get(f"/api/models/{FASHION}/history").json() == {"epochs": [], "mtime": None}


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + pixels + chunk(b"IEND", b"")


def test_bad_uploads_are_refused_with_a_message(client):
    cases = [
        (_png_header(40_000, 40_000), 400, "pixels"),  # a bomb: 1.6 gigapixels declared in 100 bytes
        (b"name,label\nboot,9\n" * 10, 400, "is not a"),
        (b"%PDF-1.4 ...", 400, "PDF"),
        (b"", 400, "empty"),
        (_png_header(28, 28)[:-16], 400, "truncated or corrupt"),  # cut inside the pixel data
        (b"\0" * (8 * 1024**2 + 1), 413, "byte limit"),
    ]
    for body, status, words in cases:
        response = client.post(f"/api/models/{FASHION}/inputs", content=body)
        assert response.status_code == status, (words, response.text)
        assert words in response.json()["error"] and "Traceback" not in response.text

    def chunks():  # no Content-Length: the server counts as it reads
        for _ in range(9):
            yield b"\0" * 1024**2

    response = client.post(f"/api/models/{FASHION}/inputs", content=chunks())
    assert response.status_code == 413 and "byte limit" in response.json()["error"]


def test_unknown_ids_and_out_of_range_requests(client, items, expect_errors):
    input_id = upload(client, items.png[0])["input_id"]
    base = f"/api/models/{FASHION}/inputs/{input_id}"
    cases = [
        ("/api/models/nope", 404, "no model with id 'nope'"),
        ("/api/models/..%2F..%2Fetc/history", 404, ""),
        (f"/api/models/{FASHION}/inputs/0123456789abcdef/layers/0/maps", 404, "no input with id"),
        (f"/api/models/2-tiny-run/inputs/{input_id}/layers/0/maps", 404, "no input with id"),
        (f"{base}/layers/8/maps", 404, "layers 0..7"),
        (f"{base}/layers/-1/maps", 404, "layers 0..7"),
        # Values of the query out of range are the request's fault (400); a missing path is 404.
        (f"{base}/layers/0/pixel?channel=32&row=0&col=0", 400, "outside the output"),
        (f"{base}/layers/0/pixel?channel=0&row=28&col=0", 400, "outside the output 32×28×28"),
        (f"{base}/layers/7/pixel?channel=0&row=0&col=0", 400, "no feature maps"),
        (f"{base}/layers/zero/maps", 422, "index"),
        (f"{base}/gradcam?target=10", 400, "class must be in 0..9"),
        (f"{base}/gradcam?layer=8", 400, "layer: fashion has layers 0..7, not 8"),
        (f"/api/models/{FASHION}/layers/0/weights?in_channel=1", 400, "in_channel must be in 0..0 for layer"),
        ("/static/../catalog.py", 404, ""),
        ("/static/secret.txt", 404, "no file"),
        ("/nothing/here", 404, "Not Found"),
    ]
    expect_errors(client, cases)


def test_failures_are_json_without_traceback(tiny_run_dir, monkeypatch):
    from fastapi.testclient import TestClient

    from cnnkit.studio import create_app, load_catalog, views

    def broken(entry):
        raise RuntimeError("disk on fire at /secret/path")

    monkeypatch.setattr(views, "history", broken)
    app = create_app(load_catalog(["fashion"]))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        response = client.get(f"/api/models/{FASHION}/history")
    assert response.status_code == 500
    assert response.json() == {"error": "the server failed on this request (RuntimeError); see its console"}


def test_page_is_offline_light_and_locked_to_its_host(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    files = [page.content] + [client.get(f"/static/{n}").content for n in ("app.js", "app.css")]
    assert sum(len(f) for f in files) < 500_000
    static = resources.files("cnnkit.studio").joinpath("static")
    for item in static.iterdir():
        text = item.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "@import" not in text, item.name
    foreign = client.get("/api/models", headers={"Host": "attacker.example"})
    assert foreign.status_code == 400


def test_cli_refuses_what_it_cannot_serve(capsys, tmp_path):
    from cnnkit.cli.__main__ import main

    assert main(["studio", "resnet99", "--port", "0"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["studio", "--runs", str(tmp_path / "none"), "--port", "0"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["studio", "fashion", "--port", "70000"]) == 2
    assert "--port must be in 0..65535" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert main(["studio", "fashion", "--port", str(taken.getsockname()[1])]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_runs_folder_serves_the_runs_and_names_the_damaged_ones(tiny_run_dir, localize_run_dir, tmp_path):
    import json
    import shutil

    from cnnkit.errors import UsageError
    from cnnkit.studio import load_catalog

    root = tmp_path / "runs"
    shutil.copytree(tiny_run_dir, root / "a-run")
    (root / "b-segment").mkdir()  # a run that never finished an epoch
    (root / "b-segment" / "config.json").write_text(json.dumps({"task": "segment", "run": {}}))
    (root / "c-notes").mkdir()  # not a run: not listed
    shutil.copytree(localize_run_dir, root / "d-localize")
    catalog = load_catalog([], root)
    assert [(e.id, e.name, e.task) for e in catalog] == [
        ("1-a-run", "a-run", "classify"), ("2-d-localize", "d-localize", "localize"),
    ]  # fmt: skip
    assert len(catalog.skipped) == 1 and "b-segment has no best.safetensors" in catalog.skipped[0]
    with pytest.raises(UsageError, match="b-segment has no best.safetensors"):
        load_catalog([str(root / "b-segment")])


def test_a_zoo_model_on_a_colour_photo(tmp_path):
    """resnet18 (freshly initialised, torchvision-style nn.Conv2d, batch norm, residual sums) on
    scikit-learn's china.jpg: the pixel arithmetic of its 7x7 stride-2 conv1 against F.conv2d."""
    import io

    from fastapi.testclient import TestClient
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from cnnkit.studio import create_app, load_catalog

    catalog = load_catalog(["resnet18"])
    entry = next(iter(catalog))
    buffer = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buffer, format="JPEG", quality=90)
    with TestClient(create_app(catalog), base_url="http://127.0.0.1") as client:
        info = client.get("/api/models/1-resnet18").json()
        assert not info["trained"] and info["input"] == {"channels": 3, "height": 224, "width": 224}
        assert info["classes"][:2] == ["class 0", "class 1"] and len(info["classes"]) == 1000
        layers = {layer["name"]: layer for layer in info["layers"]}
        assert layers["layer4.1.bn2"]["receptive_field"] == [435, 435]
        result = upload(client, buffer.getvalue(), model="1-resnet18")
        assert result["pixels"]["shape"] == [224, 224, 3] and len(result["top"]) == 5
        base = f"/api/models/1-resnet18/inputs/{result['input_id']}"
        maps = client.get(f"{base}/layers/0/maps").json()
        assert (maps["channels"], maps["height"], maps["width"]) == (64, 112, 112)
        p = client.get(f"{base}/layers/0/pixel?channel=7&row=0&col=50").json()
        cam = client.get(f"{base}/gradcam").json()
    x = entry.preprocess.normalize(np.asarray(decode(result["pixels"]).round(), dtype=np.uint8))[None]
    conv = entry.model.conv1
    with torch.no_grad():
        want = F.conv2d(x, conv.weight, None, stride=2, padding=3)[0, 7, 0, 50]
    window = F.pad(x, (3, 3, 3, 3))[0, :, 0:7, 100:107]
    assert np.allclose(p["conv"]["window"], window.numpy(), atol=1e-5)
    assert p["conv"]["sum"] == pytest.approx(float(want), abs=1e-4) == pytest.approx(p["value"], abs=1e-4)
    assert p["box"] == [-3, 97, 3, 103] and p["box_clipped"] == [0, 97, 3, 103]
    assert cam["layer"] == "layer4" and cam["cam"]["shape"] == [224, 224]


def test_class_names_follow_the_language_setting(monkeypatch):
    # 혼공머신 ch. 8 names the Fashion-MNIST classes so; `cnnkit studio --lang ko` sets CNNKIT_LANG.
    from cnnkit.studio import load_catalog

    monkeypatch.setenv("CNNKIT_LANG", "ko")
    korean = ["티셔츠", "바지", "스웨터", "드레스", "코트", "샌달", "셔츠", "스니커즈", "가방", "앵클 부츠"]
    (entry,) = load_catalog(["fashion"]).entries.values()
    assert entry.classes == korean
