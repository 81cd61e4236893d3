"""Run configuration: data, never code. Unknown keys are rejected with suggestions.

One type: ``TrainConfig`` holds what every task's run has (model, data, schedule, seed, limits,
device); each task adds its own section as a subclass (``RunConfig`` for classification,
``SceneConfig`` for localization and detection, ``SegmentConfig`` for segmentation).
``config_class(task)`` names the one a recorded task needs. A run folder saves the resolved
config as the ``run`` section of its ``config.json``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, get_type_hints

from ..errors import UsageError

IMAGE_FOLDER_RESIZE = "crop"  # as `cnnkit predict` prepares images for a run (recorded in config.json)


def divergence_options(on_divergence: str) -> dict[str, Any]:
    """The Trainer's ``divergence`` / ``on_divergence`` options for a run's ``on_divergence``
    setting (``stop``, ``warn`` or ``off``)."""
    if on_divergence == "off":
        return {"divergence": None}
    return {"on_divergence": on_divergence}


def image_folder_checks(resize: str, on_error: str) -> list[tuple[bool, str]]:
    """Checks of how a classifier run reads an image folder (``validate``'s form)."""
    return [
        (resize in ("resize", "crop", "pad"), f"resize must be resize, crop or pad, got {resize!r}"),
        (on_error in ("raise", "skip"), f"on_error must be raise or skip, got {on_error!r}"),
    ]


def engine_checks(
    max_grad_norm: float | None, on_divergence: str, ema: float | None, validation_freq: int
) -> list[tuple[bool, str]]:
    """Checks of the engine settings every run config has (``validate``'s form)."""
    return [
        (max_grad_norm is None or max_grad_norm > 0, f"max_grad_norm must be > 0, got {max_grad_norm}"),
        (ema is None or 0 < ema < 1, f"ema (the weight average's decay) must be between 0 and 1, got {ema}"),
        (validation_freq >= 1, f"validation_freq must be >= 1, got {validation_freq}"),
        (
            on_divergence in ("stop", "warn", "off"),
            f"on_divergence must be 'stop', 'warn' or 'off', got {on_divergence!r}",
        ),
    ]


class SettingsFile:
    """What a config dataclass reads: a mapping, or a JSON file (a run's ``config.json``, whose
    ``SECTION`` it takes, or that section alone), unknown keys refused with close matches, types
    checked."""

    SECTION: ClassVar[str] = "run"

    @classmethod
    def checked(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with its keys and value types checked (ints become floats where a float goes).

        Raises:
            UsageError: an unknown key (with close matches) or a value of the wrong type.
        """
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        hints = get_type_hints(cls)
        kwargs = {}
        for key, value in data.items():
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UsageError(f"unknown config key {key!r}{hint}")
            kwargs[key] = _check_type(key, value, hints[key])
        return kwargs

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build from a mapping, rejecting unknown keys (with close matches) and wrong types."""
        return cls(**cls.checked(data)).validate()  # type: ignore[attr-defined]

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The settings in a JSON file (see :meth:`read_settings`)."""
        return cls.read_settings(path)[0]

    @classmethod
    def read_settings(cls, path: str | os.PathLike[str]) -> tuple[dict[str, Any], bool]:
        """The settings in a JSON file, checked as :meth:`checked` checks them, and whether the
        file is a run's record (its ``SECTION``, as a run's config.json holds it).

        Raises:
            FileNotFoundError: no such file.
            UsageError: not UTF-8 JSON holding an object, another kind of run's config.json, or
                settings that cannot be used; the message starts with the file's name.
        """
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            reason = (
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, RecursionError) else "nested too deeply"
            )
            raise UsageError(f"--config {path} is not a JSON config file ({reason})") from None
        except IsADirectoryError:
            raise UsageError(f"--config {path} is a folder; give its config.json") from None
        if not isinstance(raw, dict):
            raise UsageError(f"{path}: a config must be a JSON object")
        if cls.SECTION not in raw and "versions" in raw:  # a run record without this section
            raise UsageError(
                f"{path} is the config.json of a {raw.get('task', 'different')!r} run, which has "
                f"no {cls.SECTION!r} section; give a run of this command, or a JSON object of "
                "its settings"
            )
        settings = raw.get(cls.SECTION, raw)
        if not isinstance(settings, dict):
            raise UsageError(f"{path}: its {cls.SECTION!r} section must be a JSON object")
        try:
            return cls.checked(settings), cls.SECTION in raw
        except UsageError as exc:
            raise UsageError(f"{path}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Any:
        """The config in a JSON file (see :meth:`read`)."""
        return cls.from_settings(cls.read(path), path)

    @classmethod
    def from_settings(cls, settings: dict[str, Any], path: str | os.PathLike[str]) -> Any:
        """The config of settings :meth:`read` returned from ``path`` (named in its errors)."""
        try:
            return cls(**settings).validate()  # type: ignore[attr-defined]
        except UsageError as exc:
            raise UsageError(f"{path}: {exc}") from None


@dataclass
class TrainConfig(SettingsFile):
    """The settings every task's run has.

    Attributes:
        task: the task the run trains (``classify``, ``localize``, ``detect``, ``segment``).
        model: registered model (or backbone) name.
        data: the data spec (``fashion-mnist``, ``fashion-scenes``, a folder, ...).
        model_kwargs: options of the model's builder.
        epochs, batch_size, lr, optimizer, weight_decay: the schedule.
        patience: early-stopping patience in epochs on the task's monitor (None: never stop).
        seed: seeds weights, order and augmentation.
        limit_train, limit_test: use only so many training / test samples.
        device: device name, or None for the best available.
        deterministic: deterministic algorithms only.
        max_grad_norm: clip the gradient norm (and stop on a non-finite one).
        sync_bn: data-parallel runs: BatchNorm with the global batch's statistics.
        on_divergence: when an epoch's loss is 1000 times the one training started at:
            ``"stop"`` (a TrainingError), ``"warn"`` (one line) or ``"off"``.
        ema: validate and keep a moving average of the weights with this decay (None: the
            weights as trained; ``engine/weight_average.py``).
        validation_freq: validate after every so many epochs and after the last (Keras'
            ``validation_freq``); patience then counts validations.
    """

    task: str = "classify"
    model: str = "hongong_cnn"
    data: str = "fashion-mnist"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    patience: int | None = 2
    seed: int = 42
    limit_train: int | None = None
    limit_test: int | None = None
    device: str | None = None
    deterministic: bool = False
    max_grad_norm: float | None = None
    sync_bn: bool = False
    on_divergence: str = "stop"
    ema: float | None = None
    validation_freq: int = 1

    def engine_divergence(self) -> dict[str, Any]:
        """The Trainer's ``divergence`` / ``on_divergence`` options for ``on_divergence``."""
        return divergence_options(self.on_divergence)

    def _common_checks(self) -> list[tuple[bool, str]]:
        return [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.patience is None or self.patience >= 0, f"patience must be >= 0, got {self.patience}"),
            (
                self.limit_train is None or self.limit_train >= 1,
                f"limit_train must be >= 1, got {self.limit_train}",
            ),
            (
                self.limit_test is None or self.limit_test >= 1,
                f"limit_test must be >= 1, got {self.limit_test}",
            ),
            *engine_checks(self.max_grad_norm, self.on_divergence, self.ema, self.validation_freq),
        ]

    def _task_checks(self) -> list[tuple[bool, str]]:
        return []

    def validate(self) -> TrainConfig:
        """Raises UsageError naming the first setting that cannot be used."""
        for ok, message in [*self._common_checks(), *self._task_checks()]:
            if not ok:
                raise UsageError(message)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunConfig(TrainConfig):
    """A classification run. The defaults are the course's: Adam, learning rate 1e-3, batch 32,
    20 % validation, early stopping on val_loss with patience 2 and the best weights restored."""

    label_smoothing: float = 0.0
    monitor: str = "val_loss"
    val_fraction: float = 0.2
    test_fraction: float = 0.1  # image folders without test/: share held out for testing
    stratify: bool = False
    preset: str = "course"
    amp: str | None = None
    channels_last: bool = False
    max_shift: int | None = None  # random translation in pixels; None: the preset's own
    cutout: int | None = None  # side of the square blanked in each training image; None: the preset's
    whiten: bool = False  # first convolution: frozen patch whitening of the training images
    compile: bool = False  # torch.compile the model (docs/performance.md)
    # Image folders only (None: the model's input; Fashion-MNIST and IDX files are 28x28x1).
    image_size: list[int] | None = None  # [height, width] the images are resized to
    channels: int | None = None  # 1 (grayscale) or 3
    resize: str = IMAGE_FOLDER_RESIZE  # how an image meets that size: resize, crop or pad
    on_error: str = "raise"  # a bad image file stops the run (raise) or is left out and listed (skip)

    def _task_checks(self) -> list[tuple[bool, str]]:
        return [
            (self.task == "classify", f"a RunConfig is for task 'classify', got {self.task!r}"),
            (
                0 < self.val_fraction < 1,
                f"validation fraction must be between 0 and 1, got {self.val_fraction}",
            ),
            (
                0 < self.test_fraction < 1,
                f"test fraction must be between 0 and 1, got {self.test_fraction}",
            ),
            (
                self.image_size is None
                or (len(self.image_size) == 2 and all(4 <= v <= 4096 for v in self.image_size)),
                f"image size must be [height, width] between 4 and 4096, got {self.image_size}",
            ),
            (self.channels in (None, 1, 3), f"channels must be 1 or 3, got {self.channels}"),
            *image_folder_checks(self.resize, self.on_error),
            (
                self.limit_train is None or self.limit_train >= 2,
                f"limit_train must be >= 2, got {self.limit_train}",
            ),
            (self.amp in (None, "bf16", "fp16"), f"amp must be none, bf16 or fp16, got {self.amp!r}"),
            (
                self.max_shift is None or self.max_shift >= 0,
                f"max_shift must be >= 0 pixels, got {self.max_shift}",
            ),
            (self.cutout is None or self.cutout >= 0, f"cutout must be >= 0 pixels, got {self.cutout}"),
        ]


# Per scene task: canvas, training scenes, objects per image, epochs, batch size, learning rate;
# sized to train in under 15 minutes on one busy CPU core (docs/detection.md).
SCENE_DEFAULTS: dict[str, dict[str, Any]] = {
    "localize": {"canvas": 64, "train_images": 50_000, "min_objects": 1, "max_objects": 1,
                 "epochs": 8, "batch_size": 128, "lr": 3e-3, "weight_decay": 1e-4},
    "detect": {"canvas": 96, "train_images": 12_000, "min_objects": 1, "max_objects": 4,
               "epochs": 8, "batch_size": 64, "lr": 2e-3},
}  # fmt: skip


@dataclass
class SceneConfig(TrainConfig):
    """A localization or detection run (``task`` ``'localize'`` or ``'detect'``) on FashionScenes
    or your COCO / YOLO data. ``SceneConfig.for_task`` fills the task's defaults."""

    task: str = "detect"
    data: str = "fashion-scenes"
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    patience: int | None = None
    canvas: int = 96
    train_images: int = 12_000
    min_objects: int = 1
    max_objects: int = 4
    item_sizes: list[int] = field(default_factory=lambda: [24, 48])
    clutter: int = 0
    noise: float = 0.0
    head_width: int = 128
    backbone_weights: str | None = None
    anchors: int = 3  # detect: anchors per level (k-means on the training boxes)
    strides: list[int] = field(default_factory=lambda: [8])  # detect: grid strides
    box_loss: str = "giou"  # localize
    box_weight: float | None = None  # localize: None: the loss's own

    @classmethod
    def for_task(cls, task: str, **values: Any) -> SceneConfig:
        """The task's defaults (SCENE_DEFAULTS) under ``values`` (None values are left out)."""
        if task not in SCENE_DEFAULTS:
            raise UsageError(f"a SceneConfig is for tasks {sorted(SCENE_DEFAULTS)}, got {task!r}")
        merged = {**SCENE_DEFAULTS[task], **{k: v for k, v in values.items() if v is not None}}
        return cls.from_dict({"task": task, **merged})

    def generated(self) -> bool:
        """Whether the data are generated FashionScenes (not COCO / YOLO files): only then do
        ``train_images``, ``item_sizes``, ``clutter``, ``noise`` and the object counts apply."""
        return self.data.partition(":")[0] not in ("coco", "yolo")

    def _task_checks(self) -> list[tuple[bool, str]]:
        low, high = (self.item_sizes + [0, 0])[:2]
        return [
            (
                self.task in SCENE_DEFAULTS,
                f"a SceneConfig is for tasks {sorted(SCENE_DEFAULTS)}, got {self.task!r}",
            ),
            (
                self.optimizer == "adamw",
                f"--task {self.task} trains with adamw; --optimizer {self.optimizer} is not available for it",
            ),
            *[
                (
                    isinstance(v, int) and v >= 1,
                    f"--{k.replace('_', '-')} must be a positive integer, got {v!r}",
                )
                for k, v in (
                    ("canvas", self.canvas),
                    ("train_images", self.train_images),
                    ("head_width", self.head_width),
                    ("anchors", self.anchors),
                )
            ],
            (
                not self.generated() or (len(self.item_sizes) == 2 and 4 <= low <= high <= self.canvas),
                f"--item-sizes {low},{high} must satisfy 4 <= MIN <= MAX <= canvas ({self.canvas})",
            ),
            (
                bool(self.strides) and all(s in (4, 8, 16, 32) for s in self.strides),
                f"--strides must be a list of 4, 8, 16 or 32, got {self.strides}",
            ),
            (
                self.min_objects <= self.max_objects,
                f"--min-objects must be <= --max-objects, got {self.min_objects} > {self.max_objects}",
            ),
        ]


SEGMENT_HEADS = ("fcn32s", "fcn16s", "fcn8s", "unet", "maskrcnn")
INSTANCE_HEADS = ("maskrcnn",)
# Mask R-CNN's five losses want a smaller batch and AdamW; these replace the FCN defaults.
MASKRCNN_DEFAULTS = {"batch_size": 8, "lr": 1e-3, "optimizer": "adamw", "epochs": 4}


@dataclass
class SegmentConfig(TrainConfig):
    """A segmentation run: FCN-32s/16s/8s or U-Net (semantic), or Mask R-CNN (instances).

    Attributes:
        head: one of SEGMENT_HEADS.
        dice_weight: weight of the soft Dice term added to the cross-entropy.
        image_size: mask folders: resize every pair to this side.
        weights: ``maskrcnn`` with a torchvision architecture: COCO weights (file or name).
        backbone_weights: FCN / U-Net: a classification run (or state dict) of the same model.
        scenes: FashionScenes parameters that differ from the defaults (``canvas``,
            ``min_size``, ``max_size``, ``min_objects``, ``max_objects``, ``clutter``, ``noise``).
    """

    task: str = "segment"
    model: str = "fashion_bn_cnn"
    data: str = "fashion-scenes"
    # The schedule of the documented FashionScenes results (docs/segmentation.md).
    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-3
    patience: int | None = None
    head: str = "fcn8s"
    dice_weight: float = 0.0
    image_size: int | None = None
    weights: str | None = None
    backbone_weights: str | None = None
    scenes: dict[str, Any] = field(default_factory=dict)

    def _task_checks(self) -> list[tuple[bool, str]]:
        return [
            (self.task == "segment", f"a SegmentConfig is for task 'segment', got {self.task!r}"),
            (
                self.head in SEGMENT_HEADS,
                f"--head must be one of {', '.join(SEGMENT_HEADS)}, got {self.head!r}",
            ),
            (self.dice_weight >= 0, f"--dice-weight must be >= 0, got {self.dice_weight!r}"),
            (
                self.weights is None or self.head in INSTANCE_HEADS,
                f"--weights is for --head maskrcnn (COCO weights), not {self.head}",
            ),
            (
                self.backbone_weights is None or self.head not in INSTANCE_HEADS,
                "--backbone-weights is for FCN and U-Net heads, not maskrcnn",
            ),
        ]


CONFIGS: dict[str, type[TrainConfig]] = {
    "classify": RunConfig,
    "localize": SceneConfig,
    "detect": SceneConfig,
    "segment": SegmentConfig,
}


def config_class(task: str) -> type[TrainConfig]:
    """The config type of ``task``.

    Raises:
        UsageError: an unknown task, with the known ones.
    """
    if task not in CONFIGS:
        raise UsageError(f"unknown task {task!r}; cnnkit trains {', '.join(CONFIGS)}")
    return CONFIGS[task]


def _check_type(key: str, value: Any, hint: Any) -> Any:
    text = str(hint)
    allowed_none = "None" in text
    if value is None:
        if allowed_none:
            return None
        raise UsageError(f"config key {key!r} must not be null")
    for name, element, words in (("list[int]", int, "integers"), ("list[str]", str, "strings")):
        if text.startswith(name):
            if not (isinstance(value, list) and all(type(v) is element for v in value)):
                raise UsageError(f"config key {key!r} must be a list of {words}, got {value!r}")
            return value
    if "dict" in text:
        if not isinstance(value, dict):
            raise UsageError(f"config key {key!r} must be an object, got {value!r}")
        return value
    for typ in (bool, int, float, str):
        if typ.__name__ in text.replace("None", ""):
            if typ is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
                return value
    raise UsageError(f"config key {key!r} has the wrong type: {value!r} (expected {text})")
