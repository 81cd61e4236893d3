"""Detection: box coding round trip, anchors, assignment, NMS, mAP, the detector, CLI smoke tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_convert

from cnnkit import create_model
from cnnkit.cli.__main__ import main as cnnkit_main
from cnnkit.errors import UsageError
from cnnkit.tasks.detection import coder
from cnnkit.tasks.detection.anchors import anchor_fit, kmeans_anchors, shape_iou, split_by_level
from cnnkit.tasks.detection.loss import YoloLoss, assign_targets
from cnnkit.tasks.detection.metrics import mean_average_precision
from cnnkit.tasks.detection.model import YoloDetector, select_detections

# ---------------------------------------------------------------- box coding


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 95), st.floats(0, 95), st.floats(0.5, 96), st.floats(0.5, 96), st.integers(0, 2)
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([4, 8, 16, 32]),
)
def test_encode_then_decode_gives_the_boxes_back(raw, stride):
    anchors = torch.tensor([[10.0, 14.0], [30.0, 20.0], [48.0, 60.0]], dtype=torch.float64)
    cx, cy, w, h, a = (torch.tensor(v, dtype=torch.float64) for v in zip(*raw))
    boxes = box_convert(torch.stack([cx, cy, w, h], 1), "cxcywh", "xyxy")
    grid = (96 // stride, 96 // stride)
    cells = coder.cells_of(boxes, stride, grid)
    offsets = coder.encode(boxes, cells, anchors[a.long()], stride)
    back = coder.decode(offsets, cells, anchors[a.long()], stride)
    torch.testing.assert_close(back, boxes, rtol=0, atol=1e-9)
    # the centre lies in its cell: offsets in [0, 1) except on the far image edge
    assert bool(((offsets[:, :2] >= 0) & (offsets[:, :2] <= 1 + 1e-9)).all())


def test_cells_of_puts_edge_centres_in_the_last_cell():
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [88.0, 88.0, 96.0, 96.0], [90.0, 0.0, 96.0, 2.0]])
    assert coder.cells_of(boxes, 8, (12, 12)).tolist() == [[0, 0], [11, 11], [11, 0]]
    cells = coder.cells_of(torch.tensor([[94.0, 94.0, 96.0, 96.0]]), 32, (3, 3))
    assert cells.tolist() == [[2, 2]]


def test_activate_reaches_cell_edges_and_bounds_sizes():
    raw = torch.tensor([[-20.0, 20.0, 50.0, -50.0]])
    offsets = coder.activate(raw)
    assert float(offsets[0, 0]) < 0 and float(offsets[0, 1]) > 1
    assert offsets[0, 2:].tolist() == [coder.MAX_LOG_SIZE, -coder.MAX_LOG_SIZE]


# ---------------------------------------------------------------- anchors


def test_kmeans_finds_the_three_shapes_and_is_deterministic():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[10.0, 30.0], [30.0, 10.0], [40.0, 40.0]])
    wh = torch.cat([c * (1 + 0.05 * torch.randn(50, 2, generator=gen)) for c in centres])
    anchors = kmeans_anchors(wh, 3, seed=1)
    assert torch.equal(anchors, kmeans_anchors(wh, 3, seed=1))
    assert torch.equal(anchors.prod(1), anchors.prod(1).sort().values), "sorted by area"
    best = shape_iou(centres, anchors).max(1).values
    assert bool((best > 0.9).all())
    assert anchor_fit(wh, anchors) > 0.85
    small, large = split_by_level(anchors, 1)[0], split_by_level(torch.cat([anchors, anchors * 3]), 2)[1]
    assert torch.equal(small, anchors) and torch.equal(large, anchors * 3)


def test_kmeans_refuses_too_few_shapes():
    with pytest.raises(ValueError, match="need at least 4 distinct box shapes; the training boxes have 2"):
        kmeans_anchors(torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 3.0]]), 4)
    with pytest.raises(ValueError, match="cannot be shared equally by 2 levels"):
        split_by_level(torch.ones(3, 2), 2)


def test_assignment_uses_the_centre_cell_and_best_anchor():
    anchors = [torch.tensor([[8.0, 8.0], [24.0, 24.0]]), torch.tensor([[48.0, 48.0], [64.0, 32.0]])]
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [40.0, 40.0, 64.0, 64.0], [0.0, 20.0, 64.0, 52.0]])
    labels = torch.tensor([3, 1, 2])
    batch = torch.tensor([0, 1, 1])
    fine, coarse = assign_targets(boxes, labels, batch, anchors, (8, 16), [(8, 8), (4, 4)], match_iou=0.99)
    assert fine.batch.tolist() == [0, 1] and fine.anchor.tolist() == [0, 1]
    assert list(zip(fine.gx.tolist(), fine.gy.tolist())) == [(0, 0), (6, 6)]
    assert coarse.batch.tolist() == [1] and coarse.anchor.tolist() == [1] and coarse.labels.tolist() == [2]
    assert (int(coarse.gx), int(coarse.gy)) == (2, 2)
    # a looser match also makes the neighbouring shape positive
    loose = assign_targets(boxes[:1], labels[:1], batch[:1], anchors, (8, 16), [(8, 8), (4, 4)], 0.1)
    assert loose[0].anchor.tolist() == [0, 1]


def test_two_boxes_claiming_one_anchor_cell_keep_the_first():
    anchors = [torch.tensor([[10.0, 10.0]])]
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
    (a,) = assign_targets(
        boxes, torch.tensor([4, 5]), torch.zeros(2, dtype=torch.long), anchors, (16,), [(2, 2)]
    )
    assert a.labels.tolist() == [4]


# ---------------------------------------------------------------- NMS / selection


def _one_hot_logits(labels: list[int], classes: int = 3, strength: float = 20.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), classes).float() * strength


def test_nms_suppresses_overlapping_boxes_of_one_class_only():
    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 10.0], [30.0, 30.0, 40.0, 40.0]]
    )
    objectness = torch.tensor([3.0, 2.0, 1.0, 0.0])  # sigmoid: .95 .88 .73 .5
    logits = _one_hot_logits([0, 0, 1, 0])
    det = select_detections(boxes, objectness, logits, score_threshold=0.3, nms_iou=0.5)
    # box 1 overlaps box 0 (IoU 0.82, same class): suppressed; box 2 is another class: kept
    assert det["labels"].tolist() == [0, 1, 0]
    assert torch.equal(det["boxes"], boxes[[0, 2, 3]])
    assert bool((det["scores"][:-1] >= det["scores"][1:]).all()), "best first"
    agnostic = select_detections(
        boxes, objectness, logits, score_threshold=0.3, nms_iou=0.5, class_agnostic=True
    )
    assert torch.equal(agnostic["boxes"], boxes[[0, 3]])


def test_selection_threshold_iou_and_limit():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]])  # IoU 1/3
    logits = _one_hot_logits([2, 2])
    both = select_detections(boxes, torch.tensor([2.0, 1.0]), logits, nms_iou=0.5)
    assert len(both["boxes"]) == 2, "IoU 1/3 is below the NMS threshold"
    assert len(select_detections(boxes, torch.tensor([2.0, 1.0]), logits, nms_iou=0.3)["boxes"]) == 1
    assert len(select_detections(boxes, torch.tensor([2.0, -5.0]), logits, score_threshold=0.1)["boxes"]) == 1
    assert len(select_detections(boxes, torch.tensor([2.0, 1.0]), logits, max_detections=1)["boxes"]) == 1


def test_an_undecided_anchor_offers_both_classes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    logits = torch.tensor([[2.0, 2.0, -9.0]])
    det = select_detections(boxes, torch.tensor([5.0]), logits, score_threshold=0.2)
    assert sorted(det["labels"].tolist()) == [0, 1]
    assert len(select_detections(boxes, torch.tensor([5.0]), logits, class_agnostic=True)["boxes"]) == 1


# ---------------------------------------------------------------- mAP


def _truth() -> list[dict[str, torch.Tensor]]:
    return [
        {
            "boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0], [55.0, 10.0, 95.0, 40.0]]),
            "labels": torch.tensor([0, 1]),
        },
        {"boxes": torch.tensor([[5.0, 40.0, 45.0, 90.0]]), "labels": torch.tensor([1])},
    ]


def _as_predictions(truth, shift: float = 0.0):
    return [
        {
            "boxes": t["boxes"] + torch.tensor([shift, 0.0, shift, 0.0]),
            "scores": torch.ones(len(t["labels"])),
            "labels": t["labels"],
        }
        for t in truth
    ]


def test_map_of_the_truth_against_itself_is_one():
    result = mean_average_precision(_as_predictions(_truth()), _truth())
    assert result["map"] == pytest.approx(1.0) and result["map_50"] == pytest.approx(1.0)


def test_map_falls_as_boxes_shift_past_the_iou_thresholds():
    # Every box is 40 wide: shifting by d gives IoU (40 - d) / (40 + d). COCO's mAP averages
    # thresholds 0.50, 0.55, ..., 0.95; a box counts at the thresholds its IoU reaches.
    truth = _truth()
    small = mean_average_precision(_as_predictions(truth, 4.0), truth)  # IoU 0.818: 7 of 10
    assert small["map_50"] == pytest.approx(1.0) and small["map_75"] == pytest.approx(1.0)
    assert small["map"] == pytest.approx(0.7)
    mid = mean_average_precision(_as_predictions(truth, 8.0), truth)  # IoU 0.667: 4 of 10
    assert mid["map_50"] == pytest.approx(1.0) and mid["map_75"] == pytest.approx(0.0)
    assert mid["map"] == pytest.approx(0.4)
    far = mean_average_precision(_as_predictions(truth, 16.0), truth)  # IoU 0.429: none
    assert far["map_50"] == pytest.approx(0.0) and far["map"] == pytest.approx(0.0)


def test_a_wrong_class_is_a_miss():
    truth = _truth()
    predictions = _as_predictions(truth)
    predictions[1]["labels"] = torch.tensor([0])
    predictions[1]["scores"] = torch.tensor([0.5])
    result = mean_average_precision(predictions, truth, class_metrics=True)
    # Class 0: its box found first, then a false positive -> AP 1. Class 1: one of its two boxes
    # found -> precision 1 up to recall 0.5, i.e. 51 of COCO's 101 recall points.
    assert result["ap_per_class"] == pytest.approx({0: 1.0, 1: 51 / 101})
    assert result["map_50"] == pytest.approx((1 + 51 / 101) / 2)


# ---------------------------------------------------------------- the detector


@pytest.mark.parametrize("strides", [(8,), (8, 16)])
def test_detector_output_shapes_and_decoding(strides):
    anchors = [torch.tensor([[10.0, 12.0], [20.0, 16.0]]) * (i + 1) for i in range(len(strides))]
    model = YoloDetector(
        create_model("hongong_cnn", num_classes=0), 10, 1, 48, anchors, strides, width=16, depth=1
    )
    with torch.no_grad():
        outputs = model(torch.rand(2, 1, 48, 48))
    assert [tuple(o.shape) for o in outputs] == [(2, 2, 48 // s, 48 // s, 15) for s in strides]
    boxes, objectness, classes = model.decode(outputs)
    cells = sum(2 * (48 // s) ** 2 for s in strides)
    assert boxes.shape == (2, cells, 4) and objectness.shape == (2, cells) and classes.shape == (2, cells, 10)
    model.eval()
    det = model.predict(torch.rand(1, 1, 48, 48), score_threshold=0.0)
    assert det[0]["boxes"].shape[1] == 4 and float(det[0]["boxes"].max()) <= 48
    # objectness starts at the 1 % prior
    assert float(torch.sigmoid(objectness).mean()) == pytest.approx(0.01, abs=0.01)


def test_detector_takes_backbone_stages_and_refuses_unreachable_strides():
    backbone = create_model("hongong_cnn", num_classes=0)
    anchors = [torch.tensor([[6.0, 6.0]]), torch.tensor([[12.0, 12.0]])]
    model = YoloDetector(backbone, 3, 1, 32, anchors, (2, 4), width=8, depth=0)
    assert [kind for kind, _ in model.features.sources] == ["stage", "final"]
    assert [tuple(o.shape[2:4]) for o in model(torch.rand(1, 1, 32, 32))] == [(16, 16), (8, 8)]
    with pytest.raises(
        ValueError, match=r"stride 12 is not available from SequentialCNN: its maps have strides \[2, 4\]"
    ):
        YoloDetector(create_model("hongong_cnn", num_classes=0), 3, 1, 32, anchors[:1], (12,))
    with pytest.raises(ValueError, match="2 anchor sets for 1 levels"):
        YoloDetector(create_model("hongong_cnn", num_classes=0), 3, 1, 32, anchors, (8,))


def test_loss_falls_when_fitting_one_batch():
    torch.manual_seed(0)
    anchors = [torch.tensor([[12.0, 12.0], [20.0, 14.0]])]
    model = YoloDetector(
        create_model("hongong_cnn", num_classes=0), 3, 1, 32, anchors, (8,), width=16, depth=1
    )
    loss_fn = YoloLoss(anchors, (8,))
    x = torch.rand(2, 1, 32, 32)
    boxes = torch.tensor([[2.0, 3.0, 14.0, 15.0], [10.0, 10.0, 30.0, 24.0], [4.0, 16.0, 16.0, 28.0]])
    labels, batch = torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss, parts = loss_fn(model(x), boxes, labels, batch)
        assert set(parts) == {"box_loss", "objectness_loss", "class_loss"}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.4 * losses[0]


# ---------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory):
    """A 1-epoch detection run on 24 tiny scenes (the train smoke test)."""
    folder = tmp_path_factory.mktemp("det")
    cache = folder / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNKIT_CACHE", str(cache))
        code = cnnkit_main(
            ["train", "--task", "detect", "--epochs", "1", "--train-images", "24", "--limit-test", "6",
             "--canvas", "40", "--item-sizes", "14,24", "--max-objects", "2", "--anchors", "2",
             "--head-width", "16", "--batch-size", "12", "--out", str(folder / "run"), "--no-progress"]
        )  # fmt: skip
    assert code == 0
    return folder / "run"


def test_train_detect_writes_a_complete_run_folder(detect_run):
    names = {p.name for p in detect_run.iterdir()}
    assert {"config.json", "best.safetensors", "metrics.json", "samples.png"} <= names
    config = json.loads((detect_run / "config.json").read_text())
    assert config["task"] == "detect" and config["model"] == "hongong_cnn"
    assert len(config["class_names"]) == 10 and len(config["anchors"]) == 1 and len(config["anchors"][0]) == 2
    metrics = json.loads((detect_run / "metrics.json").read_text())
    assert {"map", "map_50", "map_75"} <= set(metrics["test"]) and metrics["epochs_run"] == 1


def test_detect_command_draws_boxes_and_prints_json_lines(detect_run, tmp_path, capsys, drawn_boxes):
    from PIL import Image

    from cnnkit.data.scenes import FashionScenes

    scene = FashionScenes(split="test", num_images=1, canvas=40, min_size=14, max_size=24).generate()
    Image.fromarray(scene.images[0, 0].numpy()).resize((80, 60)).save(tmp_path / "scene.png")
    capsys.readouterr()
    code = cnnkit_main(
        [
            "detect",
            str(detect_run),
            str(tmp_path / "scene.png"),
            "--out",
            str(tmp_path / "out"),
            "--score-threshold",
            "0",
        ]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["image"].endswith("scene.png") and (tmp_path / "out" / "scene.png").is_file()
    assert record["detections"], "threshold 0 keeps the best boxes"
    for det in record["detections"]:
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 < x2 <= 80 and 0 <= y1 < y2 <= 60, "boxes are in the image's own pixels"
        assert det["class"] in scene.class_names and 0 <= det["score"] <= 1
    # The picture, in NumPy: the image enlarged 4 times (384 // 80: small images are enlarged to
    # be readable), the boxes printed drawn on it in matplotlib's tab10 colour of their class (at
    # threshold 0 they cover it all; tests/runs/test_separable_boxes_and_masks.py checks the
    # pixels between the boxes).
    picture, image = Image.open(tmp_path / "out" / "scene.png"), Image.open(tmp_path / "scene.png")
    assert picture.mode == "RGB" and picture.size == (320, 240)
    found = record["detections"]
    drawn_boxes(
        np.asarray(picture),
        np.asarray(image),
        found,
        scale=4,
    )


def test_detect_takes_folders_and_goes_on_past_bad_files(detect_run, tmp_path, capsys):
    # F9: as predict and segment do, a bad file is reported and the other images are drawn.
    import numpy as np
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.full((30, 40), 90, dtype=np.uint8)).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n")
    Image.fromarray(np.full((30, 40), 160, dtype=np.uint8)).save(folder / "c.png")
    capsys.readouterr()
    code = cnnkit_main(["detect", str(detect_run), str(folder), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1
    drawn = [json.loads(line)["image"] for line in captured.out.strip().splitlines()]
    assert drawn == [str(folder / "a.png"), str(folder / "c.png")]
    assert f"cnnkit: skipped {folder / 'b.png'}: {folder / 'b.png'}: is EPS/PostScript" in captured.err
    assert "1 of 3 input(s) could not be read" in captured.err and "Traceback" not in captured.err


def test_detect_command_usage_errors(detect_run, tmp_path, capsys):
    assert cnnkit_main(["detect", str(tmp_path), str(tmp_path / "x.png")]) == 2
    # A file that cannot be read is reported and the others go on; exit code 1 at the end.
    assert cnnkit_main(["detect", str(detect_run), str(tmp_path / "missing.png")]) == 1
    assert "missing.png: no such file or folder" in capsys.readouterr().err
    (tmp_path / "x.png").write_bytes(b"")
    assert cnnkit_main(["detect", str(detect_run), str(tmp_path / "x.png"), "--score-threshold", "2"]) == 2
    err = capsys.readouterr().err
    assert "--score-threshold must be between 0 and 1, got 2" in err and len(err.strip().splitlines()) == 1


def test_train_detect_refuses_bad_options(tmp_path, capsys):
    args = ["train", "--task", "detect", "--out", str(tmp_path / "r")]
    assert cnnkit_main([*args, "--strides", "16,8"]) == 2
    assert cnnkit_main([*args, "--item-sizes", "30,20"]) == 2
    assert cnnkit_main([*args, "--data", "pascal:x"]) == 2
    err = capsys.readouterr().err
    assert "--item-sizes 30,20" in err and "coco:FILE.json or yolo:FOLDER" in err


def test_item_sizes_concern_only_generated_scenes(tmp_path, capsys):
    from cnnkit.runs.config import SceneConfig

    # The default --item-sizes 24,48 does not fit a 32-pixel canvas: refused for FashionScenes ...
    with pytest.raises(UsageError, match=r"--item-sizes 24,48 must satisfy .* canvas \(32\)"):
        SceneConfig.for_task("detect", canvas=32).validate()
    # ... and not checked at all for COCO / YOLO files (tests/runs trains yolo: at --canvas 32).
    for data in ("yolo:DIR", "coco:x.json"):
        assert SceneConfig.for_task("detect", data=data, canvas=32).validate().item_sizes == [24, 48]
    # An explicit --item-sizes with files is refused in one line, before any data is read.
    argv = ["train", "--task", "detect", "--data", f"yolo:{tmp_path / 'nowhere'}", "--canvas", "32",
            "--item-sizes", "8,16", "--out", str(tmp_path / "r")]  # fmt: skip
    assert cnnkit_main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "cnnkit: error: --item-sizes is for generated FashionScenes, "
        f"not --data yolo:{tmp_path / 'nowhere'}; leave it out"
    ]
    assert not (tmp_path / "r").exists()
    # So is every other option of generated scenes, named together.
    argv[argv.index("--item-sizes") : argv.index("--item-sizes") + 2] = ["--noise", "3", "--clutter", "2"]
    assert cnnkit_main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "cnnkit: error: --clutter, --noise are for generated FashionScenes, "
        f"not --data yolo:{tmp_path / 'nowhere'}; leave them out"
    ]
    assert not (tmp_path / "r").exists()
