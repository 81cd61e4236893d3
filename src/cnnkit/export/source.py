"""What gets exported: a run's (or a zoo model's) model, its task, preprocessing and test images.

``resolve_source`` turns ``RUN_OR_MODEL`` into an :class:`ExportSource`: the model in eval mode on
the CPU wrapped so its graph returns plain tensors (``graph``), the metadata stored in the file,
and the real images the parity check runs (the run's own test set; Fashion-MNIST test images,
prepared as the model's preprocessing says, for a zoo model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.preprocess import Preprocess
from ..errors import UsageError
from ..runtime.metadata import FORMAT, INPUT_NAME, OUTPUTS, PREPROCESS_FIELDS

CALIBRATION_IMAGES = 2000  # training images int8 calibration sees (as `cnnkit evaluate --int8`)
# Where each task's test score sits in metrics.json (the first key present is used).
TEST_METRICS = {
    "classify": [("test_accuracy",)],
    "localize": [("test", "mean_iou")],
    "detect": [("test", "map_50")],
    "segment": [("test_miou",), ("test_segm_map",)],
}


@dataclass
class ExportSource:
    """A model ready to export.

    Attributes:
        graph: the module exported: ``images`` Tensor[N, C, H, W] (prepared) -> the task's outputs
            (``runtime.metadata.OUTPUTS``) as a tuple of tensors.
        model: the model itself (detection parity runs its own ``predict``).
        task: ``classify``, ``localize``, ``detect`` or ``segment``.
        meta: the metadata stored in the file (without opset and versions, added on writing).
        images: uint8 Tensor[N, C, H, W] real test images, before preprocessing.
        preprocess: how ``images`` become model inputs (also stored in ``meta``).
        calibration: uint8 Tensor[M, C, H, W] training images for int8 calibration, if known.
        labels: Tensor[N] true classes of ``images`` (classification runs), for accuracy.
    """

    graph: nn.Module
    model: nn.Module
    task: str
    meta: dict[str, Any]
    images: torch.Tensor
    preprocess: Preprocess
    calibration: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def inputs(self, images: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 Tensor[N, C, H, W] -> float32 model inputs, as the runtime prepares them."""
        images = self.images if images is None else images
        pixels = images.permute(0, 2, 3, 1).numpy()
        if tuple(pixels.shape[1:3]) != self.preprocess.size or pixels.shape[3] != self.preprocess.channels:
            pixels = np.stack([self.preprocess.pixels(p) for p in pixels])  # resized as a file would be
        return self.preprocess.normalize(pixels)


class _Tupled(nn.Module):
    """The model's outputs as a tuple of tensors (a NamedTuple or a single tensor otherwise)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        return tuple(out) if isinstance(out, tuple) else (out,)


class _DetectionGraph(nn.Module):
    """Every anchor's clipped ``xyxy`` box and class scores; score filtering and NMS happen after
    the graph (``cnnkit.runtime.boxes``), as ``YoloDetector.predict`` does them after its forward."""

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.size = model, size

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.ops import clip_boxes_to_image

        boxes, objectness, class_logits = self.model.decode(self.model(images))
        boxes = clip_boxes_to_image(boxes, self.size)
        return boxes, torch.sigmoid(objectness)[..., None] * class_logits.softmax(-1)


def _metadata(task: str, class_names: list[str], pp: Preprocess, model: str, source: str) -> dict[str, Any]:
    settings = {k: getattr(pp, k) for k in PREPROCESS_FIELDS}
    settings["size"] = list(pp.size)
    return {
        "format": FORMAT,
        "task": task,
        "class_names": list(class_names),
        "model": model,
        "source": source,
        "preprocess": json.loads(json.dumps(settings)),
        "input": INPUT_NAME,
        "outputs": list(OUTPUTS[task]),
        "test_metric": None,
    }


def _test_metric(run: Any) -> dict[str, Any] | None:
    if run.shipped:
        value = run.record.get("test_accuracy")
        return None if value is None else {"name": "test_accuracy", "value": value}
    path = Path(run.path) / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    task = "classify" if run.task == "finetune" else run.task
    for keys in TEST_METRICS[task]:
        value: Any = metrics
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            return {"name": ".".join(keys), "value": float(value)}
    return None


def resolve_source(
    target: str, *, weights: str | None = None, untrained: bool = False, limit: int = 1000
) -> ExportSource:
    """The run folder (or ``fashion``, or a zoo model name) ``target`` as an :class:`ExportSource`
    with up to ``limit`` real test images.

    Raises:
        UsageError: an unknown name, a zoo model without weights (unless ``untrained``), weights
            given to a run, or a Mask R-CNN run (which the exporters here do not take).
    """
    from ..runs.folder import SHIPPED

    if target == SHIPPED or Path(target).is_dir():
        if weights:
            raise UsageError(f"{target} brings its own weights; drop --weights {weights}")
        if untrained:
            raise UsageError(f"{target} is trained; --untrained is only for a zoo model name")
        return _from_run(target, limit)
    if Path(target).exists() or any(sep in target for sep in ("/", "\\")):
        what = "is a file" if Path(target).exists() else "does not exist"
        raise UsageError(
            f"{target} {what}; give a run folder, {SHIPPED!r} or a zoo model name (`cnnkit models`)"
        )
    return _from_zoo(target, weights, untrained, limit)


def _from_run(target: str, limit: int) -> ExportSource:
    from ..runs.folder import load_run, read_run

    run = read_run(target)
    if run.task == "segment" and run.record.get("kind") == "instance":
        raise UsageError(
            f"{run.describe()}; Mask R-CNN does not export: torch.export cannot trace torchvision's "
            "data-dependent proposal and mask stages; export an FCN-8s or U-Net segmentation run instead"
        )
    model, record = load_run(run, "cpu")
    model.eval()
    name = run.model_name
    if run.task in ("classify", "finetune"):
        source = _classify_run(run, model, record, limit)
    elif run.task in ("localize", "detect"):
        source = _scene_run(run, model, record, limit)
    else:
        source = _segment_run(run, model, record, limit)
    source.meta.update(model=name, source=str(target))
    source.meta["test_metric"] = _test_metric(run)
    return source


def _classify_run(run: Any, model: nn.Module, record: dict[str, Any], limit: int) -> ExportSource:
    config = {k: record[k] for k in ("input_shape", "normalize") if k in record}
    config.update(record.get("preprocess") or {})
    if run.shipped:  # the asset's own preprocessing (photos made Fashion-MNIST-like), as `predict fashion`
        from ..models import create_model
        from ..runs.folder import shipped_weights

        config = create_model(
            run.model_name, weights=str(shipped_weights())
        ).pretrained_info.preprocess_config()
    pp = Preprocess.from_config(config)
    calibration = None
    from ..runs.classify import load_dataset, run_data_options

    # The run's whole test set (rebuilt with its own split settings), before any --limit-test share.
    spec = (record.get("run") or {}).get("data", "fashion-mnist")
    train, test = load_dataset(spec, **run_data_options(record))
    if run.task != "finetune":
        calibration = train.take(min(CALIBRATION_IMAGES, len(train)), seed=0).images
    test = test.subset(slice(0, limit))  # the first test images: the same ones for any limit
    names = list(record.get("class_names") or getattr(model, "class_names", None) or test.class_names)
    meta = _metadata("classify", names, pp, "", "")
    return ExportSource(
        _Tupled(model).eval(), model, "classify", meta, test.images, pp, calibration, test.labels
    )


def _scene_run(run: Any, model: nn.Module, record: dict[str, Any], limit: int) -> ExportSource:
    from ..runs.evaluate import scene_test_set

    test = scene_test_set(run, limit)
    size = int(record["image_size"])
    pp = Preprocess.preset("unit", size=(size, size), channels=int(record["in_chans"]), resize="resize")
    meta = _metadata(run.task, list(record["class_names"]), pp, "", "")
    graph = (_Tupled(model) if run.task == "localize" else _DetectionGraph(model, (size, size))).eval()
    if run.task == "detect":
        meta["postprocess"] = {"score_threshold": 0.25, "nms_iou": 0.5, "class_agnostic": True}
    return ExportSource(graph, model, run.task, meta, test.images, pp)


def _segment_run(run: Any, model: nn.Module, record: dict[str, Any], limit: int) -> ExportSource:
    from ..runs.evaluate import segment_test_set

    test = segment_test_set(run, limit)
    _, height, width = (int(v) for v in test.images.shape[1:])
    channels = int(record["input_shape"][0])
    pp = Preprocess.preset("unit", size=(height, width), channels=channels, resize="resize")
    meta = _metadata("segment", list(record["class_names"]), pp, "", "")
    return ExportSource(_Tupled(model).eval(), model, "segment", meta, test.images, pp)


def _from_zoo(name: str, weights: str | None, untrained: bool, limit: int) -> ExportSource:
    from ..data.fashion_mnist import load_split
    from ..models import create_model, model_entry
    from ..models._packaged import default_packaged_weights

    entry = model_entry(name)  # unknown names fail here, with close matches
    packaged = default_packaged_weights(name)
    if not weights and not untrained and packaged is not None:
        weights = packaged.name  # the weights an installed package ships, as `cnnkit predict` takes
    if not weights and not untrained:
        raise UsageError(
            f"{name} needs --weights (a torchvision weights name such as DEFAULT, or a .safetensors/.pth "
            "file): an untrained model's outputs mean nothing; --untrained exports its random weights"
        )
    if weights and untrained:
        raise UsageError(f"--weights {weights} and --untrained contradict each other; give one")
    model = create_model(name, weights=weights) if weights else create_model(name)
    model.eval()
    info = getattr(model, "pretrained_info", None)
    config = info.preprocess_config() if info is not None else {}
    config.setdefault("input_shape", list(entry.input_size))
    pp = Preprocess.from_config(config)
    names = getattr(model, "class_names", None)
    if names is None:
        names = [str(k) for k in range(int(getattr(model, "num_classes", 0) or 0))]
    test = load_split(None, "test")
    count = min(limit, len(test))
    meta = _metadata("classify", list(names), pp, name, name)
    meta["weights"] = weights or "untrained (random initialisation)"
    return ExportSource(_Tupled(model).eval(), model, "classify", meta, test.images[:count], pp)
