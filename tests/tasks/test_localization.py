"""Localization (class + box heads, losses, metrics, CLI) and the fully convolutional conversion."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from cnnkit import create_model
from cnnkit.cli.__main__ import main as cnnkit_main
from cnnkit.data.scenes import FashionScenes
from cnnkit.layers import Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D
from cnnkit.models import FeatureInfo, SequentialCNN
from cnnkit.tasks.fully_conv import to_fully_convolutional
from cnnkit.tasks.localization import (
    BOX_LOSSES,
    LocalizationOutput,
    Localizer,
    box_loss,
    evaluate_localizer,
    localization_loss,
)

# ---------------------------------------------------------------- model


@pytest.mark.parametrize(
    ("name", "size"), [("hongong_cnn", 64), ("geron_fashion_cnn", 32), ("exercise_cnn", 48)]
)
def test_localizer_on_any_backbone(name, size):
    backbone = create_model(name, num_classes=0, in_chans=1)
    model = Localizer(backbone, 10, 1, size, width=16, hidden=32).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 1, size, size))
    assert isinstance(out, LocalizationOutput)
    assert out.logits.shape == (3, 10) and out.boxes.shape == (3, 4)
    x1, y1, x2, y2 = out.boxes.unbind(1)
    assert bool(((x1 < x2) & (y1 < y2)).all()), "centre/size through a sigmoid: always a valid box"
    assert float(out.boxes.min()) >= -0.5 and float(out.boxes.max()) <= 1.5


def test_localizer_returns_the_same_type_in_training():
    model = Localizer(create_model("hongong_cnn", num_classes=0), 4, 1, 32, width=8, hidden=8)
    assert isinstance(model.train()(torch.rand(2, 1, 32, 32)), LocalizationOutput)


# ---------------------------------------------------------------- losses and metrics


@pytest.mark.parametrize("kind", BOX_LOSSES)
def test_box_losses_vanish_on_the_target_and_grow_with_the_error(kind):
    target = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8]])
    assert float(box_loss(target, target, kind)) == pytest.approx(0.0, abs=1e-6)
    near, far = target + 0.02, target + 0.2
    assert 0 < float(box_loss(near, target, kind)) < float(box_loss(far, target, kind))


def test_localization_loss_parts_and_bad_loss_name():
    out = LocalizationOutput(torch.tensor([[5.0, 0.0], [0.0, 5.0]]), torch.tensor([[0.1, 0.1, 0.5, 0.5]] * 2))
    labels = torch.tensor([0, 1])
    total, parts = localization_loss(out, labels, out.boxes, "mse", box_weight=3.0)
    assert parts["box_loss"] == pytest.approx(0.0) and float(total) == pytest.approx(parts["class_loss"])
    with pytest.raises(ValueError, match=r"box loss must be one of \('mse', 'smooth_l1', 'giou'\), got 'l2'"):
        box_loss(out.boxes, out.boxes, "l2")


class _Oracle(nn.Module):
    """Answers with fixed outputs (to test the metrics, not a network)."""

    def __init__(self, logits: torch.Tensor, boxes: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.boxes = logits, boxes
        self.calls = 0

    def forward(self, x: torch.Tensor) -> LocalizationOutput:
        n = len(x)
        out = LocalizationOutput(
            self.logits[self.calls : self.calls + n], self.boxes[self.calls : self.calls + n]
        )
        self.calls += n
        return out


@pytest.fixture(scope="module")
def single(fashion):
    items = fashion[1].subset(slice(0, 200))
    return FashionScenes(split="test", num_images=12, canvas=32, min_size=12, max_size=28).generate(items)


def test_metrics_of_perfect_and_of_shifted_boxes(single):
    boxes, labels = single.single_object()
    norm = boxes / 32
    logits = torch.nn.functional.one_hot(labels, 10).float() * 10
    perfect = evaluate_localizer(_Oracle(logits, norm), single, torch.device("cpu"), flip_tta=False)
    assert perfect == pytest.approx({"mean_iou": 1.0, "accuracy": 1.0, "iou50": 1.0, "accuracy_iou50": 1.0})
    # Half the classes wrong, all boxes moved off their objects.
    wrong = logits.clone()
    wrong[::2] = wrong[::2].roll(1, dims=1)
    moved = norm.clone()
    moved[:, [0, 2]] += 2.0
    result = evaluate_localizer(_Oracle(wrong, moved), single, torch.device("cpu"), flip_tta=False)
    assert result["accuracy"] == pytest.approx(0.5) and result["mean_iou"] == 0.0
    assert result["accuracy_iou50"] == 0.0


def test_flip_tta_averages_the_image_and_its_mirror():
    from cnnkit.tasks.localization.train import predict_localizer

    torch.manual_seed(0)
    model = Localizer(create_model("hongong_cnn", num_classes=0), 10, 1, 32, width=8).eval()
    images = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    labels, scores, boxes = predict_localizer(model, images, torch.device("cpu"), flip_tta=True)
    x = images.float() / 255
    with torch.no_grad():
        plain, mirrored = model(x), model(x.flip(-1))
    probs = (plain.logits.softmax(1) + mirrored.logits.softmax(1)) / 2
    b = mirrored.boxes  # x1, x2 of the mirror image map to 1 - x2, 1 - x1 of the original
    expected = (plain.boxes + torch.stack([1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]], 1)) / 2
    torch.testing.assert_close(scores, probs.max(1).values)
    assert torch.equal(labels, probs.argmax(1))
    torch.testing.assert_close(boxes, expected)


# ---------------------------------------------------------------- fully convolutional


def _valid_cnn(head_kind: str) -> SequentialCNN:
    features = OrderedDict(
        conv1=Conv2D(6, 3, activation="relu", in_channels=1),
        pool1=MaxPool2D(2),
        conv2=Conv2D(8, 3, activation="relu", in_channels=6),
        pool2=MaxPool2D(2),
    )  # 28 -> 26 -> 13 -> 11 -> 5, total stride 4
    if head_kind == "flatten":
        head = OrderedDict(
            flatten=Flatten(),
            dense1=Dense(16, activation="relu", in_features=8 * 5 * 5),
            dropout=Dropout(0.4),
            classifier=Dense(10, in_features=16),
        )
    else:
        head = OrderedDict(pool=GlobalAvgPool2D(), classifier=Dense(10, activation="softmax", in_features=8))
    info = [FeatureInfo("features.pool1", 6, 2), FeatureInfo("features.pool2", 8, 4)]
    return SequentialCNN(features, head, info, (1, 28, 28), 10, 16)


@pytest.mark.parametrize("head_kind", ["flatten", "global_pool"])
def test_every_output_cell_equals_the_classifier_on_its_crop(head_kind):
    torch.manual_seed(0)
    model = _valid_cnn(head_kind).eval()
    fcn = to_fully_convolutional(model).eval()
    image = torch.rand(2, 1, 52, 60)
    with torch.no_grad():
        scores = fcn(image)
        assert scores.shape == (2, 10, 7, 9)  # features 11 x 13, minus the 5 x 5 window, plus 1
        for i in range(scores.shape[2]):
            for j in range(scores.shape[3]):
                crop = image[:, :, i * fcn.stride : i * fcn.stride + 28, j * fcn.stride : j * fcn.stride + 28]
                torch.testing.assert_close(scores[:, :, i, j], model(crop), rtol=1e-5, atol=1e-5)


def test_course_cnn_converts_and_agrees_on_its_own_input_size():
    torch.manual_seed(0)
    model = create_model("hongong_cnn").eval()
    fcn = to_fully_convolutional(model).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(fcn(x)[:, :, 0, 0], model(x), rtol=1e-5, atol=1e-5)
        assert fcn(torch.rand(1, 1, 64, 80)).shape == (1, 10, 10, 14)  # 'same': 16 x 20 maps, 7 x 7 window
    assert fcn.stride == 4 and fcn.window == (28, 28)
    # the dense weights are shared, not copied: fine-tuning one changes the other
    assert fcn.head[0].dense.weight is model.head.dense1.weight


def test_conversion_refuses_what_has_no_convolutional_form():
    with pytest.raises(ValueError, match="needs a SequentialCNN"):
        to_fully_convolutional(nn.Sequential(nn.Linear(2, 2)))
    model = _valid_cnn("flatten")
    model.head.dropout = nn.LayerNorm(16)
    with pytest.raises(ValueError, match=r"head layer 'dropout' \(LayerNorm\) has no convolutional form"):
        to_fully_convolutional(model)


# ---------------------------------------------------------------- CLI


def test_train_localize_smoke_and_detect_on_the_run(tmp_path, monkeypatch, capsys, drawn_boxes):
    from PIL import Image

    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code = cnnkit_main(
        ["train", "--task", "localize", "--epochs", "1", "--train-images", "16", "--limit-test", "4",
         "--canvas", "32", "--item-sizes", "12,28", "--box-loss", "smooth_l1", "--head-width", "16",
         "--batch-size", "16", "--out", str(run), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert "test mean IoU" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "localize" and config["loss"]["box_loss"] == "smooth_l1"
    assert config["image_size"] == 32 and config["data"]["test"]["num_images"] == 4
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) == {"mean_iou", "accuracy", "iou50", "accuracy_iou50"}
    assert (run / "best.safetensors").is_file() and (run / "samples.png").is_file()

    scene = FashionScenes(split="test", num_images=1, canvas=32, min_size=12, max_size=28).generate()
    Image.fromarray(scene.images[0, 0].numpy()).save(tmp_path / "item.png")
    assert cnnkit_main(["detect", str(run), str(tmp_path / "item.png"), "--score-threshold", "0"]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert len(record["detections"]) == 1 and (run / "detections" / "item.png").is_file()

    # The pictures, in NumPy: the image enlarged (detect: 384 // 32 = 12, at most 8; samples.png:
    # 4), the printed box drawn at its coordinates in matplotlib's tab10 colour of its class, the
    # true boxes in white, the image's own pixels everywhere else.
    image = np.asarray(Image.open(tmp_path / "item.png"))

    assert (
        drawn_boxes(np.asarray(Image.open(run / "detections" / "item.png")), image, record["detections"], 8)
        > 0
    )
    # samples.png: the 4 test scenes of the run in a row, each 4 px apart on grey (96), with the
    # box the run predicts for it (with flip averaging, as the run scores) and the true box.
    from cnnkit.runs.folder import load_run, read_run
    from cnnkit.tasks.localization.train import predict_localizer

    test = FashionScenes(**config["data"]["test"]).load()
    model, _ = load_run(read_run(run), "cpu")
    labels, scores, boxes = predict_localizer(model, test.images[:4], torch.device("cpu"))

    found = [
        [{"label": int(c), "class": test.class_names[int(c)], "score": float(p), "box": (b * 32).tolist()}]
        for c, p, b in zip(labels, scores, boxes)
    ]
    samples = np.asarray(Image.open(run / "samples.png").convert("RGB"))
    assert samples.shape == (4 + 128 + 4, 4 + 4 * (128 + 4), 3)
    gutter = np.ones(samples.shape[:2], bool)
    for i in range(4):
        x0 = 4 + i * 132
        gutter[4:132, x0 : x0 + 128] = False
        tile = samples[4:132, x0 : x0 + 128]
        assert drawn_boxes(tile, test.images[i, 0].numpy(), found[i], 4, test.target(i)["boxes"].numpy()) > 0
    assert (samples[gutter] == 96).all()


def test_localize_refuses_classification_only_flags(tmp_path, capsys):
    out = ["--out", str(tmp_path / "run")]
    assert cnnkit_main(["train", "localize", "--preset", "fast", *out]) == 2
    assert "`cnnkit train localize` does not take --preset" in capsys.readouterr().err
    assert cnnkit_main(["train", "localize", "--optimizer", "sgd", *out]) == 2
    assert "trains with adamw; --optimizer sgd is not available" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_backbone_weights_start_the_backbone_from_a_classifier(tmp_path):
    from cnnkit.errors import UsageError
    from cnnkit.io.weights import save_weights
    from cnnkit.runs.config import SceneConfig
    from cnnkit.runs.scenes import build_backbone as build_from

    def build_backbone(s, in_chans):
        return build_from(SceneConfig.for_task("localize", **s), in_chans)

    classifier = create_model("fashion_bn_cnn", depth=2)
    run = tmp_path / "classifier"
    run.mkdir()
    save_weights(classifier.state_dict(), run / "best.safetensors")
    s = {"model": "fashion_bn_cnn", "model_kwargs": {"depth": 2}, "backbone_weights": str(run)}
    backbone = build_backbone(s, in_chans=1)
    own = backbone.state_dict()
    assert own and all(torch.equal(v, classifier.state_dict()[k]) for k, v in own.items())
    # A file of another depth: refused both ways, never partly loaded.
    larger = (
        r"--model fashion_bn_cnn \{'depth': 1\}\): .* holds tensors the backbone SequentialCNN does not have"
    )
    with pytest.raises(UsageError, match=larger):
        build_backbone({**s, "model_kwargs": {"depth": 1}}, in_chans=1)
    save_weights(create_model("fashion_bn_cnn").state_dict(), tmp_path / "depth1.safetensors")
    smaller = r"--backbone-weights \(--model fashion_bn_cnn \{'depth': 2\}\): .* does not fit the backbone"
    with pytest.raises(UsageError, match=smaller):
        build_backbone({**s, "backbone_weights": str(tmp_path / "depth1.safetensors")}, in_chans=1)
    with pytest.raises(UsageError, match=r"--model fashion_bn_cnn with options \{'depht': 2\}"):
        build_backbone({**s, "model_kwargs": {"depht": 2}}, in_chans=1)


def test_localize_refuses_missing_backbone_weights_and_bad_model_options(tmp_path, capsys):
    args = ["train", "--task", "localize", "--out", str(tmp_path / "run")]
    assert cnnkit_main([*args, "--backbone-weights", str(tmp_path / "nothing")]) == 2
    assert "no such run folder or file" in capsys.readouterr().err
    assert cnnkit_main([*args, "--model-option", "depth"]) == 2
    assert "--model-option takes KEY=VALUE" in capsys.readouterr().err
