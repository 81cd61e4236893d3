"""Localization and detection train through the engine's Trainer: its history, exact resume
from a checkpoint, and the non-finite guard (on tiny real FashionScenes)."""

from __future__ import annotations

import pytest
import torch

from cnnkit import create_model
from cnnkit.data.scenes import FashionScenes
from cnnkit.engine import Callback, Task, Trainer
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.errors import TrainingError
from cnnkit.tasks.detection import DetectTask, YoloDetector, YoloLoss, fit_detector
from cnnkit.tasks.localization import Localizer, LocalizeTask, fit_localizer

CANVAS = 32
BATCH = 12
TRAIN_SCENES = 36  # 3 steps per epoch
ANCHORS = [torch.tensor([[12.0, 12.0], [20.0, 16.0]])]


def _scenes(fashion, split: str, num: int, max_objects: int):
    # train / val scenes from disjoint Fashion-MNIST train items, as FashionScenes does
    items = fashion[0].subset(slice(0, 600) if split == "train" else slice(50_000, 50_300))
    cfg = FashionScenes(
        split=split, num_images=num, canvas=CANVAS, min_size=12, max_size=24, max_objects=max_objects
    )
    return cfg.generate(items)


@pytest.fixture(scope="module")
def localize_data(fashion):
    return _scenes(fashion, "train", TRAIN_SCENES, 1), _scenes(fashion, "val", 12, 1)


@pytest.fixture(scope="module")
def detect_data(fashion):
    return _scenes(fashion, "train", TRAIN_SCENES, 2), _scenes(fashion, "val", 12, 2)


def _localizer(seed: int = 0) -> Localizer:
    torch.manual_seed(seed)
    return Localizer(create_model("hongong_cnn", num_classes=0), 10, 1, CANVAS, width=8, hidden=16)


def _detector(seed: int = 0) -> YoloDetector:
    torch.manual_seed(seed)
    return YoloDetector(
        create_model("hongong_cnn", num_classes=0), 10, 1, CANVAS, ANCHORS, (8,), width=8, depth=1
    )


def _fit(kind: str, data, model, **options):
    """A 2-epoch fit of ``kind`` ('localize' or 'detect') on the tiny scenes."""
    common = {"epochs": 2, "batch_size": BATCH, "lr": 3e-3, "device": torch.device("cpu"), "seed": 7}
    if kind == "localize":
        return fit_localizer(model, *data, **common, **options)
    return fit_detector(model, YoloLoss(ANCHORS, (8,)), *data, **common, **options)


class _Spy(Callback):
    """Keeps the trainer that ran it and the epochs it saw."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(epoch)


class _Interrupt(Callback):
    """Ctrl-C after the first batch of epoch ``epoch`` (from 0): mid-epoch, after a checkpoint."""

    display_only = True  # no state, so the resumed run need not have it

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_batch_end(self, step, logs):
        if self.trainer.epoch == self.epoch:
            raise KeyboardInterrupt


def test_the_tasks_are_engine_tasks():
    localize, detect = LocalizeTask(), DetectTask(YoloLoss(ANCHORS, (8,)))
    assert isinstance(localize, Task) and isinstance(detect, Task)
    assert (localize.name, localize.monitor) == ("localize", "val_accuracy_iou50")
    assert (detect.name, detect.monitor) == ("detect", "val_map_50")
    assert set(localize.shown) >= {"loss", "class_loss", "box_loss", "val_mean_iou"}
    assert set(detect.shown) >= {"loss", "box_loss", "objectness_loss", "class_loss", "val_map_50"}
    with pytest.raises(ValueError, match="box loss must be one of"):
        LocalizeTask(box_loss="l2")


@pytest.mark.parametrize(
    ("kind", "parts", "metrics"),
    [
        ("localize", {"class_loss", "box_loss"}, {"mean_iou", "accuracy", "iou50", "accuracy_iou50"}),
        ("detect", {"box_loss", "objectness_loss", "class_loss"}, {"map", "map_50", "map_75", "mar_100"}),
    ],
)
def test_fit_runs_the_engine_and_returns_its_history(kind, parts, metrics, localize_data, detect_data):
    data = localize_data if kind == "localize" else detect_data
    spy, seen = _Spy(), []
    model = _localizer() if kind == "localize" else _detector()
    result = _fit(kind, data, model, callbacks=[spy], on_epoch_end=lambda e, logs: seen.append(e))
    assert isinstance(spy.trainer, Trainer) and spy.trainer.task.name == kind
    assert spy.trainer.global_step == 2 * TRAIN_SCENES // BATCH and spy.epochs == [0, 1]
    assert seen == [1, 2], "on_epoch_end counts epochs from 1"
    history = result["history"]
    assert history == spy.trainer.history.epochs and [h["epoch"] for h in history] == [1, 2]
    assert {"loss", "lr", "seconds", *parts, *(f"val_{k}" for k in metrics)} <= set(history[0])
    assert result["epochs_run"] == 2 and result["train_seconds"] > 0
    monitored = [h[spy.trainer.task.monitor] for h in history]
    assert result["best_epoch"] == 1 + monitored.index(max(monitored))
    report = spy.trainer.evaluate(data[1])
    assert metrics <= set(report)
    if kind == "detect":
        assert set(report["ap_per_class"]) <= set(data[1].class_names)


@pytest.mark.parametrize("kind", ["localize", "detect"])
def test_an_interrupted_fit_resumes_to_the_same_weights_bit_for_bit(
    kind, localize_data, detect_data, tmp_path
):
    data = localize_data if kind == "localize" else detect_data
    build = _localizer if kind == "localize" else _detector
    reference = build(0)
    expected = _fit(kind, data, reference, checkpoint_path=tmp_path / "ref.ckpt")

    ckpt = tmp_path / "last.ckpt"
    with pytest.raises(KeyboardInterrupt):
        _fit(kind, data, build(0), checkpoint_path=ckpt, callbacks=[_Interrupt(epoch=1)])
    assert load_checkpoint(ckpt)["epoch"] == 1
    resumed = build(123)  # other initial weights: everything must come from the checkpoint
    result = _fit(kind, data, resumed, checkpoint_path=ckpt, resume_from=ckpt)

    assert result["best_epoch"] == expected["best_epoch"] and result["epochs_run"] == 2
    drop = ("seconds",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in result["history"]] == [
        {k: v for k, v in h.items() if k not in drop} for h in expected["history"]
    ]
    want = reference.state_dict()
    for name, tensor in resumed.state_dict().items():
        assert torch.equal(tensor, want[name]), name
    final, ref_final = load_checkpoint(ckpt), load_checkpoint(tmp_path / "ref.ckpt")
    assert final["global_step"] == ref_final["global_step"] == 2 * TRAIN_SCENES // BATCH
    for name, tensor in final["model"].items():
        assert torch.equal(tensor, ref_final["model"][name]), name


@pytest.mark.parametrize("kind", ["localize", "detect"])
def test_a_nan_loss_stops_training_before_its_epoch_reaches_a_checkpoint(
    kind, localize_data, detect_data, tmp_path, monkeypatch, nan_at
):
    steps = TRAIN_SCENES // BATCH
    k = steps + 2  # epoch 2, step 2
    ckpt = tmp_path / "last.ckpt"
    if kind == "localize":
        import cnnkit.tasks.localization.task as localize_module

        monkeypatch.setattr(
            localize_module, "localization_loss", nan_at(localize_module.localization_loss, k)
        )
        model, run = _localizer(), lambda m: _fit("localize", localize_data, m, checkpoint_path=ckpt)
    else:
        model = _detector()
        loss = nan_at(YoloLoss(ANCHORS, (8,)), k)
        common = {"epochs": 2, "batch_size": BATCH, "lr": 3e-3, "device": torch.device("cpu")}
        run = lambda m: fit_detector(m, loss, *detect_data, **common, checkpoint_path=ckpt)  # noqa: E731
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, step 2 \(global step 5\)"):
        run(model)
    body = load_checkpoint(ckpt)
    assert body["epoch"] == 1 and body["global_step"] == steps, "the last checkpoint is epoch 1's"
    assert all(bool(torch.isfinite(t).all()) for t in body["model"].values() if t.is_floating_point())
