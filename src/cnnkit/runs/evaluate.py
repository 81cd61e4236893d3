"""The test set each run recorded, and re-scoring of localization, detection and segmentation runs.

(Classification runs are re-scored by ``cnnkit evaluate`` through ``ClassifyTrainer``, with the
run's own preprocessing, precision and test-time augmentation, on :func:`classify_data`.)
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.device import pick_device
from ..errors import UsageError
from .folder import RunInfo, load_run


def classify_data(run: RunInfo, data: str | None = None, limit_test: int | None = None) -> tuple[Any, Any]:
    """(train, test) of a classify or finetune run: by default the test images its metrics.json
    scored, loaded as training loaded them (seed, fractions, image size, resize mode, limits).

    Args:
        data: another data spec to score the run on (its own limit then does not apply).
        limit_test: a fixed sample of so many test images (the same one every time).
    """
    from .classify import load_dataset, run_data_options

    record = run.record
    settings = record.get("run") or {}
    own_limit = None if data else settings.get("limit_test")
    spec = data or settings.get("data", "fashion-mnist")
    return load_dataset(spec, limit_test=limit_test or own_limit, **run_data_options(record))


def classify_scorer(
    record: dict[str, Any],
    model: torch.nn.Module,
    device: str | torch.device | None = None,
    *,
    int8: bool = False,
    compile: bool | None = False,
    threads: Any = None,
) -> Any:
    """An inference-only ClassifyTrainer that scores as a classify or finetune run scored itself
    at the end of training: its normalisation, flip TTA and mixed precision (where autocast
    exists), so its numbers match the run's metrics.json.

    Args:
        int8: for a quantized copy of the model: float32 inputs in the default memory format.
        compile, threads: as ``cnnkit.engine.Trainer``.
    """
    from ..tasks.classify.augment import TTA_MODES, tta_function
    from ..tasks.classify.presets import trainer_extras
    from ..tasks.classify.task import ClassifyTrainer

    device = device if isinstance(device, torch.device) else pick_device(device)
    config = record.get("run") or {}
    tta = record.get("tta")
    if tta is None:  # a run folder from before config.json recorded it: its preset's choice
        tta = trainer_extras(config.get("preset") or "course", config.get("lr", 1e-3)).get("tta", False)
    try:
        tta_function(tta)  # the task's own check of the modes it knows
    except ValueError:
        raise UsageError(
            f"config.json says tta={tta!r}; this version knows true, false, {', '.join(TTA_MODES)}: "
            "the run folder is damaged or from a newer cnnkit"
        ) from None
    norm = record.get("normalize")
    amp = config.get("amp") if device.type in ("cpu", "cuda") and not int8 else None
    return ClassifyTrainer(
        model,
        device=device,
        normalize=(norm["mean"], norm["std"]) if norm else None,
        amp=amp,
        channels_last=bool(config.get("channels_last")) and not int8,
        tta=tta,
        optimizer=None,
        compile=compile,
        threads=threads,
    )


def scene_test_set(run: RunInfo, limit_test: int | None = None) -> Any:
    """The test scenes a localize / detect run was scored on (generated again, or re-split)."""
    from ..data.scenes import FashionScenes
    from ..tasks.detection.data import load_task_data

    record = run.record
    data = record["data"]
    if data.get("name") == "fashion-scenes":
        test = FashionScenes(**data["test"]).load()
    else:
        from .scenes import scene_record_settings

        settings = scene_record_settings(record)
        test = load_task_data(
            data["name"],
            image_size=record["image_size"],
            in_chans=record["in_chans"],
            scenes=None,
            num_val=0,
            num_test=0,
            limit_train=settings.get("limit_train"),
            limit_test=settings.get("limit_test"),
            seed=settings.get("seed", 0),
        ).test
    return test.subset(range(min(limit_test, len(test)))) if limit_test else test


def segment_test_set(run: RunInfo, limit_test: int | None = None) -> Any:
    """The test images (with masks) a segmentation run was scored on."""
    from ..tasks.segmentation.data import DEFAULT_SIZES, scene_splits, scenes_with
    from .segment import segment_config, semantic_splits

    config = segment_config(run.record)
    if run.record.get("kind") == "instance":
        test = scene_splits(
            scenes_with(config.scenes),
            train_images=1,
            test_images=config.limit_test or DEFAULT_SIZES["test"],
        )[2]
        return test.subset(range(min(limit_test, len(test)))) if limit_test else test
    test = semantic_splits(config)[2]
    return test.take(min(limit_test, len(test)), seed=0) if limit_test else test


def evaluate_run(
    run: RunInfo, device: str | torch.device | None = None, limit_test: int | None = None
) -> dict[str, Any]:
    """The run's test report, as its ``metrics.json`` computed it; ``summary`` is one line for people.

    Returns:
        detect: COCO mAP@[.5:.95] (``map``), mAP@0.5 (``map_50``), ...; localize: ``mean_iou``,
        ``accuracy``, ...; segment: ``miou`` and ``pixel_accuracy`` (semantic) or ``segm`` and
        ``bbox`` mAPs (Mask R-CNN); all with ``num_images`` and ``test_set``.
    """
    device = device if isinstance(device, torch.device) else pick_device(device)
    model, record = load_run(run, device)
    if run.task in ("localize", "detect"):
        test = scene_test_set(run, limit_test)
        if run.task == "detect":
            from ..tasks.detection.train import evaluate_detector

            report = evaluate_detector(model, test, device, class_metrics=True)
            report["ap_per_class"] = {test.class_names[k]: v for k, v in report["ap_per_class"].items()}
            summary = f"mAP@0.5 {report['map_50']:.4f}, mAP@[.5:.95] {report['map']:.4f}"
        else:
            from ..tasks.localization.train import evaluate_localizer

            report = evaluate_localizer(model, test, device)
            summary = f"mean IoU {report['mean_iou']:.4f}, class accuracy {report['accuracy']:.4f}"
        report["num_images"] = len(test)
        where = record["data"].get("name", "?")
    else:
        test = segment_test_set(run, limit_test)
        if record.get("kind") == "instance":
            from ..tasks.segmentation.instance import MaskRCNNTrainer

            report = MaskRCNNTrainer(model, device=device).evaluate(test)
            summary = f"mask mAP {report['segm']['map']:.4f}, box mAP {report['bbox']['map']:.4f}"
        else:
            from ..tasks.segmentation.train import SegmentationTrainer

            report = SegmentationTrainer(model, device=device).evaluate(test)
            summary = f"mIoU {report['miou']:.4f}, pixel accuracy {report['pixel_accuracy']:.4f}"
        where = (run.record.get("run") or {}).get("data", "?")
    report["test_set"] = f"{where} test split, {len(test):,} images"
    report["summary"] = f"{run.model_name} ({run.task}) on the {report['test_set']}: {summary}"
    return report


def default_cascade(trainer: Any, train: Any, images: int, mode: bool | None = None) -> Any:
    """`cnnkit evaluate`'s int8 cascade (``ClassifyTrainer.use_int8_cascade``): the float
    model's predictions from an int8 first pass, on the CPU.

    Args:
        trainer: the ClassifyTrainer that will score.
        train: the run's training ArrayDataset (its first images calibrate the int8 copy).
        images: how many images the evaluation scores.
        mode: True, on (a model it cannot run is a usage error); False, off; None, on where the
            model has an int8 form and ``images`` repay the set-up (``cascade.cascade_pays``).

    Returns:
        The Int8Cascade in use, or None.
    """
    from ..tasks.classify.cascade import CALIBRATION_IMAGES, cascade_pays
    from ..tasks.classify.quantize import float_chain

    if mode is False or train is None or len(train) == 0:
        return None
    if trainer.device.type != "cpu":
        if mode:
            raise UsageError(f"--cascade runs on the CPU, not {trainer.device}; use --device cpu")
        return None
    calibration = train.take(min(CALIBRATION_IMAGES, len(train)), seed=0).images
    try:
        if mode is None:
            float_chain(trainer.model)  # no int8 form (a residual network, ...): float, as before
            precision = str(trainer.amp or "fp32")
            if not cascade_pays(images, trainer.model, trainer.prepare(calibration), precision):
                return None
        return trainer.use_int8_cascade(calibration)
    except (ValueError, RuntimeError) as exc:  # RuntimeError: no quantized engine in this PyTorch
        if mode:
            # the quantizer's messages name --int8, the flag that usually reaches them
            raise UsageError(f"--cascade: {exc}".replace("--int8", "--cascade")) from None
        return None
