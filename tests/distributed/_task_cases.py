"""The detection and validation cases of the equivalence test (see test_equivalence.py), run by
``_equivalence_worker.py`` in one process and in each rank of a 2-process group.

- ``train_detector``: the YOLO detector trained for 2 steps of a global batch of 32 on 37 real
  FashionScenes (an uneven last batch), SGD, with or without SyncBatchNorm.
- ``train_segmenter``: an FCN trained for 2 such steps on masks whose labelled pixels differ
  from image to image (a third of the images has its left 12 columns ignored).
- ``validation_reports``: each task's evaluation (what its validation and test reports run) of a
  model whose weights ``prepare_models`` wrote once, before the workers start, so the one
  process and the ranks score the same weights on the same 9 images.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from cnnkit.data.masks import MaskDataset
from cnnkit.data.scenes import FashionScenes
from cnnkit.engine import Trainer, seed_everything
from cnnkit.models import create_model
from cnnkit.tasks.detection.loss import YoloLoss
from cnnkit.tasks.detection.model import YoloDetector
from cnnkit.tasks.detection.task import DetectTask
from cnnkit.tasks.localization.loss import localization_loss
from cnnkit.tasks.localization.model import Localizer
from cnnkit.tasks.localization.task import LocalizeTask
from cnnkit.tasks.localization.train import normalized_boxes
from cnnkit.tasks.segmentation import MaskRCNNTask, SegmentTask, build_segmenter
from cnnkit.tasks.segmentation.instance import build_mask_rcnn
from cnnkit.tasks.segmentation.loss import SegmentationLoss

SCENES = FashionScenes(canvas=32, min_size=12, max_size=24, min_objects=1, max_objects=3)
SINGLE = FashionScenes(canvas=32, min_size=12, max_size=28)
ANCHORS = [torch.tensor([[12.0, 12.0], [20.0, 14.0]])]
VAL_IMAGES = 9  # shares of 5 and 4 on two ranks


@functools.cache
def train_scenes():
    return SCENES.replace(split="train", num_images=37).generate()


@functools.cache
def val_data() -> dict[str, object]:
    scenes = SCENES.replace(split="val", num_images=VAL_IMAGES).generate()
    return {
        "scenes": scenes,
        "single": SINGLE.replace(split="val", num_images=VAL_IMAGES).generate(),
        "masks": MaskDataset.from_scenes(scenes),
    }


def _detector() -> YoloDetector:
    backbone = create_model("hongong_cnn", num_classes=0)
    return YoloDetector(backbone, 10, 1, 32, ANCHORS, (8,), width=16, depth=1)


def _models() -> dict[str, torch.nn.Module]:
    seed_everything(0)
    return {
        "localize": Localizer(create_model("hongong_cnn", num_classes=0), 10, 1, 32, width=16, hidden=32),
        "detect": _detector(),
        "segment": build_segmenter("fashion_bn_cnn", "fcn8s", 11, in_chans=1, depth=1),
        "mask_rcnn": build_mask_rcnn("hongong_cnn", 11, image_size=32),
    }


def train_detector(world_size: int, sync_bn: bool) -> Trainer:
    train = train_scenes()
    seed_everything(0)
    trainer = Trainer(
        _detector(), DetectTask(YoloLoss(ANCHORS, (8,))), optimizer="sgd", lr=0.01, device="cpu",
        seed=0, sync_bn=sync_bn,
    )  # fmt: skip
    trainer.fit(train, None, epochs=1, batch_size=32 // world_size, verbose=0)
    return trainer


class _BySamples(SegmentTask):
    """The segmentation task without ``loss_units``: ranks weighted by their images only."""

    def train_step(self, trainer, batch):
        out = super().train_step(trainer, batch)
        out.pop("loss_units")
        return out


def train_segmenter(world_size: int, by_units: bool) -> Trainer:
    masks = MaskDataset.from_scenes(train_scenes())
    ignored = masks.masks.clone()
    ignored[::3, :, :12] = masks.ignore_index
    masks = dataclasses.replace(masks, masks=ignored)
    seed_everything(0)
    model = build_segmenter("hongong_cnn", "fcn32s", masks.num_classes, in_chans=1)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout | torch.nn.Dropout2d):
            module.p = 0.0  # dropout masks are drawn per rank (docs/distributed.md)
    task = SegmentTask() if by_units else _BySamples()
    trainer = Trainer(model, task, optimizer="sgd", lr=0.05, device="cpu", seed=0, sync_bn=True)
    trainer.fit(masks, None, epochs=1, batch_size=32 // world_size, verbose=0)
    return trainer


def prepare_models(path) -> None:
    """Weights that give the metrics something to count: each model but Mask R-CNN fitted for 30
    steps on the validation images themselves (in this one process), saved to ``path``."""
    data, models = val_data(), _models()
    scenes, single, masks = data["scenes"], data["single"], data["masks"]
    x = scenes.images.float() / 255
    boxes, labels, index = scenes.batch_targets(torch.arange(VAL_IMAGES))
    pixel_loss, yolo = SegmentationLoss(), YoloLoss(ANCHORS, (8,))
    boxes1, labels1 = normalized_boxes(single)
    steps = {
        "localize": lambda m: localization_loss(m(single.images.float() / 255), labels1, boxes1)[0],
        "detect": lambda m: yolo(m(x), boxes, labels, index)[0],
        "segment": lambda m: pixel_loss(m(masks.images.float() / 255), masks.masks.long()),
    }
    for name, model in models.items():
        if name not in steps:
            continue  # Mask R-CNN as built: training it to score above 0 costs too much here
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(30):
            loss = steps[name](model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    torch.save({name: model.state_dict() for name, model in models.items()}, path)


def validation_reports(path) -> dict[str, dict]:
    """Each task's evaluation of the prepared weights (every rank of a group calls it)."""
    data, models = val_data(), _models()
    states = torch.load(path, weights_only=True)
    tasks = {
        "localize": (LocalizeTask(), data["single"]),
        "detect": (DetectTask(YoloLoss(ANCHORS, (8,))), data["scenes"]),
        "segment": (SegmentTask(), data["masks"]),
        "mask_rcnn": (MaskRCNNTask(in_chans=models["mask_rcnn"].in_chans), data["scenes"]),
    }
    reports = {}
    for name, (task, val) in tasks.items():
        models[name].load_state_dict(states[name])
        trainer = Trainer(models[name], task, optimizer=None, device="cpu")
        reports[name] = {"validate": task.validate(trainer, val), "evaluate": task.evaluate(trainer, val)}
    return reports
