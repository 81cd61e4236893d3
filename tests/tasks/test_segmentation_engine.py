"""Semantic and instance segmentation on the engine: the tasks in cnnkit.engine.Trainer, exact
resume from last.ckpt, and the non-finite guard, on real FashionScenes."""

from __future__ import annotations

import math

import pytest
import torch

from cnnkit.data.masks import MaskDataset
from cnnkit.data.scenes import FashionScenes
from cnnkit.engine import Callback, EarlyStopping, Trainer
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.errors import TrainingError
from cnnkit.tasks.segmentation import (
    MaskRCNNTask,
    MaskRCNNTrainer,
    SegmentationTrainer,
    SegmentTask,
    build_segmenter,
)
from cnnkit.tasks.segmentation.instance import build_mask_rcnn
from cnnkit.tasks.segmentation.instance_task import warmup_cosine
from cnnkit.tasks.segmentation.task import cosine_decay

CANVAS = 32
SCENES = FashionScenes(canvas=CANVAS, min_size=16, max_size=24, min_objects=1, max_objects=2)


pytestmark = pytest.mark.usefixtures("free_cores")


@pytest.fixture(scope="module")
def scenes():
    return (
        SCENES.replace(split="train", num_images=32).generate(),
        SCENES.replace(split="val", num_images=8).generate(),
    )


@pytest.fixture(scope="module")
def masks(scenes):
    return tuple(MaskDataset.from_scenes(s) for s in scenes)


def _segmenter(num_classes: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_segmenter("fashion_bn_cnn", "fcn8s", num_classes, in_chans=1, depth=1)


def _mask_rcnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_mask_rcnn("hongong_cnn", 11, image_size=CANVAS)


class Interrupt(Callback):
    """Raises KeyboardInterrupt when epoch ``at`` begins (after last.ckpt of the epoch before)."""

    def __init__(self, at: int | None = None) -> None:
        self.at = at

    def on_epoch_begin(self, epoch, logs):
        if epoch == self.at:
            raise KeyboardInterrupt


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"weights differ after resume: {different[:5]}"


def _same_history(a: Trainer, b: Trainer) -> None:
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in a.history.epochs]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in b.history.epochs]


# ----------------------------------------------------------------- the tasks in the engine


def test_segment_task_learns_through_the_engine_trainer(masks):
    train, val = masks
    trainer = Trainer(_segmenter(train.num_classes), SegmentTask(), lr=3e-3, seed=0, scheduler=cosine_decay)
    history = trainer.fit(train, val, epochs=3, batch_size=8)
    rows = history.epochs
    assert len(rows) == 3 and trainer.global_step == 3 * 4
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]
    for key in ("pixel_accuracy", "val_loss", "val_pixel_accuracy", "val_miou"):
        assert 0.0 <= rows[-1][key] <= (1.0 if key != "val_loss" else math.inf)
    # Held-out scenes: the loss falls too (a few dozen scenes teach mostly the background yet).
    assert rows[-1]["val_loss"] < 0.8 * rows[0]["val_loss"]
    assert rows[-1]["pixel_accuracy"] > rows[0]["pixel_accuracy"]
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine to 0
    assert SegmentTask.monitor == "val_miou"


def test_segmentation_trainer_is_the_engine(masks):
    train, _ = masks
    trainer = SegmentationTrainer(_segmenter(train.num_classes), amp=None, max_grad_norm=1.0)
    assert isinstance(trainer, Trainer) and isinstance(trainer.task, SegmentTask)
    assert trainer.max_grad_norm == 1.0 and trainer.scheduler_factory is cosine_decay
    assert SegmentationTrainer(_segmenter(train.num_classes), schedule="constant").scheduler_factory is None
    with pytest.raises(ValueError, match=r"schedule must be one of \('cosine', 'constant'\).*'linear'"):
        SegmentationTrainer(_segmenter(train.num_classes), schedule="linear")
    with pytest.raises(TypeError, match="schedule="):
        SegmentationTrainer(_segmenter(train.num_classes), scheduler=cosine_decay)


def test_flips_come_from_the_epoch_generator(masks):
    train, _ = masks
    trainer = SegmentationTrainer(_segmenter(train.num_classes), amp=None, channels_last=False)
    task = trainer.task

    def epoch(seed):
        return list(task.batches(trainer, train, 8, torch.Generator().manual_seed(seed)))

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other))
    # Every image is either a training image or its mirror, and its mask goes with it.
    images = train.images.float() / 255
    flipped = 0
    for x, y, _ in first:
        for xi, yi in zip(x, y):
            match = [i for i in range(len(train)) if torch.equal(images[i], xi)]
            mirror = [i for i in range(len(train)) if torch.equal(images[i].flip(-1), xi)]
            if match:
                assert torch.equal(train.masks[match[0]].long(), yi)
            else:
                assert mirror and torch.equal(train.masks[mirror[0]].long().flip(-1), yi)
                flipped += 1
    assert 0 < flipped < len(train)


def test_mask_rcnn_task_learns_through_the_engine_trainer(scenes):
    train, val = scenes
    train = train.subset(range(8))
    trainer = Trainer(
        _mask_rcnn(), MaskRCNNTask(in_chans=1), optimizer="adamw", lr=1e-3, weight_decay=1e-4,
        seed=0, scheduler=warmup_cosine(),
    )  # fmt: skip
    history = trainer.fit(train, val.subset(range(4)), epochs=2, batch_size=4)
    rows = history.epochs
    assert len(rows) == 2 and trainer.global_step == 4
    parts = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
    for row in rows:
        assert all(math.isfinite(row[k]) and row[k] >= 0 for k in parts)
        # The step's loss is the sum of the five: so are their epoch means.
        assert row["loss"] == pytest.approx(sum(row[k] for k in parts), rel=1e-5)
        assert 0.0 <= row["val_segm_map"] <= 1.0 and 0.0 <= row["val_bbox_map"] <= 1.0
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert MaskRCNNTask.monitor == "val_segm_map"


def test_mask_rcnn_trainer_is_the_engine_and_stops_at_max_steps(scenes):
    train, _ = scenes
    trainer = MaskRCNNTrainer(_mask_rcnn(), check_finite=True, max_grad_norm=10.0)
    assert isinstance(trainer, Trainer) and trainer.in_chans == 1 and trainer.max_grad_norm == 10.0
    history = trainer.fit(train.subset(range(8)), epochs=3, batch_size=2, max_steps=3)
    assert trainer.global_step == 3 and len(history.epochs) == 1
    assert trainer.scheduler.last_epoch == 3  # the warm-up + cosine ran over max_steps, not 12
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        trainer.fit(train, epochs=1, batch_size=2, max_steps=0)
    assert trainer.task.max_steps == 3  # the refused value was not kept
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        MaskRCNNTask(max_steps=-1)


# ----------------------------------------------------------------- exact resume


def _resume_matches(tmp_path, make_trainer, fit, epochs: int, total_steps: int) -> None:
    uninterrupted = make_trainer(tmp_path / "a" / "last.ckpt", Interrupt(None), seed=0)
    fit(uninterrupted)
    path = tmp_path / "b" / "last.ckpt"
    interrupted = make_trainer(path, Interrupt(1), seed=0)
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted)
    assert load_checkpoint(path)["epoch"] == 1
    # Other initial weights: everything must come from the checkpoint.
    resumed = make_trainer(path, Interrupt(None), seed=1)
    resumed.load_checkpoint(path, total_steps=total_steps)
    fit(resumed)
    assert resumed.epoch == uninterrupted.epoch == epochs
    _assert_same_weights(resumed.model, uninterrupted.model)
    _same_history(resumed, uninterrupted)
    assert load_checkpoint(path)["global_step"] == uninterrupted.global_step == total_steps


def test_segmentation_resumes_exactly(tmp_path, masks):
    train, val = masks

    def make(path, interrupt, seed):
        early = EarlyStopping(SegmentTask.monitor, patience=None)  # its best weights resume too
        return SegmentationTrainer(
            _segmenter(train.num_classes, seed), lr=3e-3, seed=0, callbacks=[early, interrupt],
            checkpoint_path=path,
        )  # fmt: skip

    _resume_matches(
        tmp_path, make, lambda t: t.fit(train, val, epochs=2, batch_size=8), epochs=2, total_steps=8
    )


def test_mask_rcnn_resumes_exactly(tmp_path, scenes):
    train, val = scenes[0].subset(range(16)), scenes[1].subset(range(4))

    def make(path, interrupt, seed):
        return MaskRCNNTrainer(_mask_rcnn(seed), seed=0, callbacks=[interrupt], checkpoint_path=path)

    _resume_matches(
        tmp_path, make, lambda t: t.fit(train, val, epochs=2, batch_size=4), epochs=2, total_steps=8
    )


# ----------------------------------------------------------------- non-finite guard


class NaNAfter(torch.nn.Module):
    """The wrapped loss, NaN from call ``after`` on."""

    def __init__(self, loss: torch.nn.Module, after: int) -> None:
        super().__init__()
        self.loss, self.after, self.calls = loss, after, 0

    def forward(self, logits, target):
        self.calls += 1
        loss = self.loss(logits, target)
        return loss * float("nan") if self.calls > self.after else loss


def test_segmentation_nan_loss_stops_without_a_checkpoint_of_that_epoch(tmp_path, masks):
    train, _ = masks
    path = tmp_path / "last.ckpt"
    task = SegmentTask()
    task.loss = NaNAfter(task.loss, after=4 + 1)  # epoch 2's second step (no validation calls)
    trainer = SegmentationTrainer(_segmenter(train.num_classes), task, seed=0, checkpoint_path=path)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, step 2 \(global step 6\)"):
        trainer.fit(train, epochs=3, batch_size=8)
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and state["global_step"] == 4  # epoch 1's, not a later one
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_mask_rcnn_nan_loss_stops_without_a_checkpoint_of_that_epoch(tmp_path, scenes):
    train = scenes[0].subset(range(8))
    model = _mask_rcnn()
    calls = []

    def poison(module, inputs, losses):
        if module.training:
            calls.append(1)
            if len(calls) > 2:  # epoch 2's first step
                return {**losses, "loss_mask": losses["loss_mask"] * float("nan")}
        return None

    model.register_forward_hook(poison)
    path = tmp_path / "last.ckpt"
    trainer = MaskRCNNTrainer(model, seed=0, checkpoint_path=path)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, step 1 \(global step 3\)"):
        trainer.fit(train, epochs=2, batch_size=4)
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and state["global_step"] == 2
