"""Segmentation: FCN/U-Net shapes, bilinear transposed convs, losses, mIoU, Mask R-CNN, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnkit.cli.__main__ import main
from cnnkit.data.masks import IGNORE_INDEX, write_mask
from cnnkit.data.scenes import FashionScenes
from cnnkit.tasks.segmentation import (
    HEADS,
    BilinearConvTranspose2d,
    SegmentationLoss,
    SegmentationMetrics,
    bilinear_kernel,
    build_segmenter,
    soft_dice_loss,
)
from cnnkit.tasks.segmentation.instance import (
    MaskRCNNTrainer,
    build_mask_rcnn,
    instance_targets,
)

pytestmark = pytest.mark.usefixtures("free_cores")


@pytest.fixture(scope="module")
def scenes():
    torch.manual_seed(0)
    return FashionScenes(split="test", num_images=4, min_objects=2, max_objects=3).generate()


# ----------------------------------------------------------------- heads


@pytest.mark.parametrize("head", HEADS)
def test_output_size_equals_input_size(head):
    torch.manual_seed(0)
    model = build_segmenter("fashion_bn_cnn", head, 5).eval()
    for size in [(64, 64), (37, 53), (9, 20), (1, 1)]:
        with torch.no_grad():
            out = model(torch.rand(2, 1, *size))
        assert out.shape == (2, 5, *size)


@pytest.mark.parametrize("head", ["fcn32s", "fcn16s", "unet"])
def test_other_backbone_odd_size(head):
    model = build_segmenter("hongong_cnn", head, 3, in_chans=3).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 31, 45)).shape == (1, 3, 31, 45)


def test_heads_use_the_strides_they_name():
    strides = {"fcn32s": 8, "fcn16s": 4, "fcn8s": 2}  # fashion_bn_cnn stages: 2, 4, 8
    for head, final in strides.items():
        model = build_segmenter("fashion_bn_cnn", head, 4)
        assert model.head.output_stride == final
        assert len(model.head.skip_ups) == {"fcn32s": 0, "fcn16s": 1, "fcn8s": 2}[head]


def test_fcn8s_needs_three_strides():
    with pytest.raises(ValueError, match=r"fcn8s needs backbone stages at strides \[4, 2, 1\].*\[2, 4\]"):
        build_segmenter("hongong_cnn", "fcn8s", 3)
    with pytest.raises(ValueError, match=r"head must be one of"):
        build_segmenter("hongong_cnn", "fcn4s", 3)


# ----------------------------------------------------------------- bilinear upsampling


def test_bilinear_kernel_hand_computed():
    taps2 = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(bilinear_kernel(2), torch.outer(taps2, taps2))
    taps3 = torch.tensor([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3])
    torch.testing.assert_close(bilinear_kernel(3), torch.outer(taps3, taps3))


def test_transposed_conv_hand_computed_row():
    # Row [1, 3] doubled: the source of output column o is (o + 0.5) / 2 - 0.5, so the interior
    # columns are 0.75·1 + 0.25·3 = 1.5 and 0.25·1 + 0.75·3 = 2.5; the outermost ones see a zero
    # beyond the edge: 0.75·1 and 0.75·3.
    up = BilinearConvTranspose2d(1, 2)
    x = torch.tensor([[[[1.0, 3.0], [1.0, 3.0]]]])  # two equal rows: output row 1 is interior
    with torch.no_grad():
        row = up(x)[0, 0, 1]
    torch.testing.assert_close(row, torch.tensor([0.75, 1.5, 2.5, 2.25]))


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
@pytest.mark.parametrize("depthwise", [False, True])
def test_transposed_conv_matches_interpolate(factor, depthwise):
    torch.manual_seed(factor)
    channels = 3
    up = BilinearConvTranspose2d(channels, factor, groups=channels if depthwise else 1)
    x = torch.randn(2, channels, 5, 7)
    with torch.no_grad():
        ours = up(x)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == ref.shape == (2, channels, 5 * factor, 7 * factor)
    m = factor // 2  # the border where interpolation repeats the edge and the conv sees zeros
    torch.testing.assert_close(ours[..., m:-m, m:-m], ref[..., m:-m, m:-m])
    assert up.weight.requires_grad


def test_fcn_at_init_is_bilinear_upsampling_of_the_top_scores():
    # Zero skip scores and bilinear upsamplers: FCN-8s starts as the coarse FCN (Long et al.).
    torch.manual_seed(0)
    model = build_segmenter("fashion_bn_cnn", "fcn8s", 4).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        stages = model.backbone.forward_stages(x)
        top = model.head.score(model.head.fc(stages[model.head.top_index]))
        ref = top
        for _ in range(3):  # 8s: two ×2 skip steps, then the final ×2
            ref = F.interpolate(ref, scale_factor=2, mode="bilinear", align_corners=False)
        out = model(x)
    # Each ×2 step differs from interpolation on its outer pixel; 16 pixels cover all three.
    torch.testing.assert_close(out[..., 16:-16, 16:-16], ref[..., 16:-16, 16:-16])


# ----------------------------------------------------------------- losses and metrics


def test_cross_entropy_ignores_index_and_dice():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    target[0, 0] = IGNORE_INDEX
    valid = target != IGNORE_INDEX
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    torch.testing.assert_close(SegmentationLoss()(logits, target), expected)
    perfect = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    assert float(soft_dice_loss(perfect, target)) < 1e-3
    loss = SegmentationLoss(dice_weight=0.5)(logits, target)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    all_ignored = torch.full_like(target, IGNORE_INDEX)
    assert float(SegmentationLoss(dice_weight=1.0)(logits, all_ignored).detach()) == 0.0


def test_miou_perfect_prediction_is_one():
    target = torch.randint(0, 4, (3, 8, 8))
    target[0, :2] = torch.arange(4).repeat(4)[:8]  # every class present
    metrics = SegmentationMetrics(4)
    metrics.update(target.clone(), target)
    report = metrics.compute()
    assert report["miou"] == 1.0 and report["pixel_accuracy"] == 1.0
    assert all(v == 1.0 for v in report["per_class_iou"].values())


def test_miou_known_confusion_hand_computed():
    target = torch.tensor([[0, 0, 1, 1, 2, 2, IGNORE_INDEX]])
    preds = torch.tensor([[0, 1, 1, 1, 2, 0, 2]])  # the ignored pixel's prediction must not count
    metrics = SegmentationMetrics(4, ["bg", "a", "b", "never"])
    metrics.update(preds[:, None], target[:, None])
    report = metrics.compute()
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 1, FN 1 -> 1/2
    iou = report["per_class_iou"]
    assert iou["bg"] == pytest.approx(1 / 3) and iou["a"] == pytest.approx(2 / 3)
    assert iou["b"] == pytest.approx(1 / 2) and iou["never"] is None
    assert report["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert report["pixel_accuracy"] == pytest.approx(4 / 6)
    assert report["confusion_matrix"][0] == [1, 1, 0, 0]
    logits = F.one_hot(preds, 4).permute(0, 2, 1).reshape(1, 4, 1, 7).float()
    from_logits = SegmentationMetrics(4)
    from_logits.update(logits, target[:, None])
    assert from_logits.compute()["miou"] == pytest.approx(report["miou"])


# ----------------------------------------------------------------- Mask R-CNN


def test_instance_targets_are_visible_masks(scenes):
    target = instance_targets(scenes, 0)
    visible = scenes.instance_masks(0, visible=True)
    assert target["masks"].shape[1:] == (64, 64) and target["masks"].dtype == torch.uint8
    assert (target["labels"] >= 1).all() and (target["labels"] <= 10).all()
    k = 0
    ys, xs = torch.nonzero(visible[k], as_tuple=True)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    assert target["boxes"][k].tolist() == box


def test_mask_rcnn_trains_one_step_on_fashion_scenes(scenes):
    torch.manual_seed(0)
    model = build_mask_rcnn("hongong_cnn", 11)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = MaskRCNNTrainer(model, lr=1e-3)
    history = trainer.fit(scenes, epochs=1, batch_size=2, max_steps=1)
    row = history.epochs[0]
    assert math.isfinite(row["loss"]) and row["loss_mask"] > 0
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.body") for k in changed)
    assert any(k.startswith("roi_heads.mask_predictor") for k in changed)
    report = trainer.evaluate(scenes.subset([0, 1]))
    assert 0.0 <= report["segm"]["map"] <= 1.0 and report["num_images"] == 2


def test_coco_weights_load_from_a_local_file(tmp_path):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    coco = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    path = tmp_path / "maskrcnn_coco.pth"
    torch.save(coco.state_dict(), path)
    model = build_mask_rcnn("maskrcnn_resnet50_fpn", 11, weights=str(path))
    key = "backbone.body.layer1.0.conv1.weight"
    torch.testing.assert_close(model.state_dict()[key], coco.state_dict()[key])
    assert model.roi_heads.box_predictor.cls_score.out_features == 11
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 11
    with pytest.raises(ValueError, match=r"a cnnkit backbone \(hongong_cnn\) starts from scratch"):
        build_mask_rcnn("hongong_cnn", 11, weights=str(path))


# ----------------------------------------------------------------- CLI and run folders


def _mask_folder(root, n=10):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = np.zeros((24, 24), dtype=np.uint8)
        mask = np.zeros((24, 24), dtype=np.uint8)
        y, x = rng.integers(0, 12, size=2)
        cls = 1 + i % 2
        image[y : y + 10, x : x + 10] = 120 * cls
        mask[y : y + 10, x : x + 10] = cls
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        write_mask(root / "masks" / f"{i}.png", mask, 3)
    (root / "classes.txt").write_text("background\ndim\nbright\n", encoding="utf-8")


def test_cli_train_and_segment(tmp_path, capsys, monkeypatch, tile_cells, overlay_reference):
    _mask_folder(tmp_path / "data")
    run = tmp_path / "run"
    code = main(
        ["train", "--task", "segment", "--head", "fcn16s", "--model", "fashion_bn_cnn",
         "--data", str(tmp_path / "data"), "--epochs", "2", "--batch-size", "4",
         "--out", str(run), "--no-progress", "--seed", "1"]
    )  # fmt: skip
    assert code == 0
    assert "test mIoU" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["head"] == "fcn16s" and config["model"] == "fashion_bn_cnn"
    assert config["class_names"] == ["background", "dim", "bright"]
    assert config["input_shape"] == [1, 24, 24]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["test_miou"] <= 1.0 and set(metrics["per_class_iou"]) == {
        "background", "dim", "bright"
    }  # fmt: skip
    assert (run / "best.safetensors").is_file()
    overlays = tmp_path / "overlays"
    odd = tmp_path / "odd.png"
    Image.fromarray(np.full((19, 33), 200, dtype=np.uint8)).save(odd)
    import cnnkit.tasks.segmentation.overlay as overlay

    drawn = {}  # the figure behind each overlay file, for where its panels landed
    save = overlay.save_overlay

    def keep(path, *args, **kwargs):
        drawn[path.name] = save(path, *args, **kwargs)
        return drawn[path.name]

    monkeypatch.setattr(overlay, "save_overlay", keep)
    code = main(["segment", str(run), str(odd), str(tmp_path / "data" / "images" / "1.png"),
                 str(tmp_path / "missing.png"), "--out", str(overlays), "--save-masks"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1 and "missing.png" in captured.err  # a bad file is reported, others done
    with Image.open(overlays / "odd_mask.png") as mask:
        assert mask.mode == "P" and mask.size == (33, 19)
    # The overlay shows the image, then the image blended with each predicted class's colour
    # (computed in NumPy from the saved mask), read back from the file at every pixel's centre.
    # This 2-epoch run paints little or nothing; tests/runs/test_separable_segment.py checks the
    # colours on a run that segments well.
    for image, stem in ((odd, "odd"), (tmp_path / "data" / "images" / "1.png", "1")):
        image = np.asarray(Image.open(image))
        labels = np.asarray(Image.open(overlays / f"{stem}_mask.png")).astype(int)
        left, right = tile_cells(overlays / f"{stem}_segment.png", drawn[f"{stem}_segment.png"], 110)
        np.testing.assert_allclose(left, overlay_reference(image, np.zeros_like(labels)), atol=2)
        np.testing.assert_allclose(right, overlay_reference(image, labels), atol=2)


def test_cli_rejects_bad_choices(tmp_path, capsys):
    assert main(["train", "--task", "segment", "--head", "fcn4s"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    code = main(["train", "--task", "segment", "--head", "fcn8s", "--weights", "COCO_V1",
                 "--out", str(tmp_path / "r")])  # fmt: skip
    assert code == 2
    assert "--weights is for --head maskrcnn" in capsys.readouterr().err
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "config.json").write_text('{"task": "classify"}')
    assert main(["segment", str(tmp_path / "cls"), "x.png"]) == 2
    assert "is a classify run; `cnnkit segment` works on segment runs" in capsys.readouterr().err


def test_scene_options_are_refused_with_a_mask_folder(tmp_path, capsys):
    """Options that shape generated FashionScenes do nothing with an image + mask folder: refused
    in one line naming them (as `train detect` refuses them with COCO / YOLO files)."""
    from cnnkit.cli.__main__ import parse_command_line
    from cnnkit.cli.train_segment import config_from_args

    _mask_folder(tmp_path / "data")
    argv = ["train", "--task", "segment", "--data", str(tmp_path / "data"), "--epochs", "1",
            "--no-progress", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main([*argv, "--item-sizes", "8,16"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"cnnkit: error: --item-sizes is for generated FashionScenes, not --data {tmp_path / 'data'}; "
        "leave it out"
    ]
    assert main([*argv, "--canvas", "32", "--noise", "3", "--min-objects", "2"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "cnnkit: error: --canvas, --noise, --min-objects are for generated FashionScenes, "
        f"not --data {tmp_path / 'data'}; leave them out"
    ]
    assert not (tmp_path / "r").exists()
    # --train-images is --limit-train with a folder: it keeps that meaning.
    config = config_from_args(parse_command_line([*argv, "--train-images", "5"]), "segment")
    assert config.limit_train == 5


def test_backbone_weights_from_a_classifier(tmp_path):
    from cnnkit.io import save_weights
    from cnnkit.io.weights import WeightsError
    from cnnkit.models import create_model

    torch.manual_seed(0)
    classifier = create_model("fashion_bn_cnn", num_classes=10)
    save_weights(classifier.state_dict(), tmp_path / "best.safetensors")
    model = build_segmenter("fashion_bn_cnn", "fcn8s", 11, backbone_weights=tmp_path)
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, classifier.state_dict()[key])
    with pytest.raises(WeightsError, match=r"does not fit the backbone.*shape mismatches"):
        build_segmenter("fashion_bn_cnn", "fcn8s", 11, backbone_weights=tmp_path, widths=(8, 16, 32))


def test_cli_options_become_the_run_config():
    from cnnkit.cli.__main__ import parse_command_line
    from cnnkit.cli.train_segment import config_from_args
    from cnnkit.errors import UsageError

    args = parse_command_line(
        ["train", "--task", "segment", "--head", "unet", "--model-option", "depth=2",
         "--model-option", "widths=[16,32,64]", "--item-sizes", "20,30", "--train-images", "99"]
    )  # fmt: skip
    config = config_from_args(args, "segment")
    assert config.head == "unet" and config.data == "fashion-scenes"
    assert config.model_kwargs == {"depth": 2, "widths": [16, 32, 64]}
    assert config.scenes == {"min_size": 20, "max_size": 30} and config.limit_train == 99
    args = parse_command_line(["train", "--task", "segment", "--model-option", "depth"])
    with pytest.raises(UsageError, match=r"--model-option takes KEY=VALUE"):
        config_from_args(args, "segment")
    args = parse_command_line(["train", "--task", "segment", "--item-sizes", "30,20"])
    with pytest.raises(UsageError, match=r"FashionScenes: need min_size <= max_size"):
        config_from_args(args, "segment")


def test_bf16_training_matches_float32_training():
    # The fast path (bf16 autocast in the forward pass, channels-last) must learn as float32 does.
    from cnnkit.data.masks import MaskDataset
    from cnnkit.engine.perf import pick_perf_settings
    from cnnkit.tasks.segmentation.train import SegmentationTrainer

    torch.manual_seed(0)
    data = MaskDataset.from_scenes(FashionScenes(split="train", num_images=96, canvas=32,
                                                 min_size=16, max_size=24).generate())  # fmt: skip
    scores = {}
    for amp in (None, "bf16"):
        torch.manual_seed(0)
        model = build_segmenter("fashion_bn_cnn", "fcn8s", data.num_classes, in_chans=1, depth=1)
        trainer = SegmentationTrainer(model, lr=3e-3, amp=amp, seed=0)
        assert trainer.amp == amp
        history = trainer.fit(data, epochs=3, batch_size=16)
        losses = [epoch["loss"] for epoch in history.epochs]
        assert losses[-1] < 0.8 * losses[0]
        scores[amp] = trainer.evaluate(data)["pixel_accuracy"]
    assert abs(scores["bf16"] - scores[None]) < 0.03
    auto = SegmentationTrainer(build_segmenter("fashion_bn_cnn", "fcn32s", data.num_classes, in_chans=1))
    assert auto.amp == pick_perf_settings(auto.device).amp
    with pytest.raises(ValueError, match="amp"):
        SegmentationTrainer(
            build_segmenter("fashion_bn_cnn", "fcn32s", data.num_classes, in_chans=1), amp="fp8"
        )
