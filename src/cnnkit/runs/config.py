"""Run configuration: data, never code. Unknown keys are rejected with suggestions."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from ..errors import UsageError


@dataclass
class RunConfig:
    """Everything that defines a classification run (saved as config.json in the run folder).

    The defaults are the course's: Adam, learning rate 1e-3, batch 32, 20 % validation,
    early stopping on val_loss with patience 2 and the best weights restored.
    """

    model: str = "hongong_cnn"
    data: str = "fashion-mnist"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    patience: int = 2
    monitor: str = "val_loss"
    seed: int = 42
    val_fraction: float = 0.2
    test_fraction: float = 0.1  # image folders without test/: share held out for testing
    stratify: bool = False
    limit_train: int | None = None
    limit_test: int | None = None
    device: str | None = None
    deterministic: bool = False
    preset: str = "course"
    amp: str | None = None
    channels_last: bool = False
    max_grad_norm: float | None = None
    max_shift: int | None = None  # random translation in pixels; None: the preset's own
    compile: bool = False  # torch.compile the model (docs/performance.md)
    # Image folders only (None: the model's input; Fashion-MNIST and IDX files are 28x28x1).
    image_size: list[int] | None = None  # [height, width] the images are resized to
    channels: int | None = None  # 1 (grayscale) or 3

    def validate(self) -> RunConfig:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.patience >= 0, f"patience must be >= 0, got {self.patience}"),
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
            (
                self.limit_train is None or self.limit_train >= 2,
                f"limit_train must be >= 2, got {self.limit_train}",
            ),
            (
                self.limit_test is None or self.limit_test >= 1,
                f"limit_test must be >= 1, got {self.limit_test}",
            ),
            (
                self.max_grad_norm is None or self.max_grad_norm > 0,
                f"max_grad_norm must be > 0, got {self.max_grad_norm}",
            ),
            (self.amp in (None, "bf16", "fp16"), f"amp must be none, bf16 or fp16, got {self.amp!r}"),
            (
                self.max_shift is None or self.max_shift >= 0,
                f"max_shift must be >= 0 pixels, got {self.max_shift}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a mapping, rejecting unknown keys (with close matches) and wrong types."""
        names = [f.name for f in dataclasses.fields(cls)]
        hints = get_type_hints(cls)
        kwargs = {}
        for key, value in data.items():
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UsageError(f"unknown config key {key!r}{hint}")
            kwargs[key] = _check_type(key, value, hints[key])
        return cls(**kwargs).validate()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunConfig:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise UsageError(f"{path}: a config must be a JSON object")
        return cls.from_dict(raw.get("run", raw))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    text = str(hint)
    allowed_none = "None" in text
    if value is None:
        if allowed_none:
            return None
        raise UsageError(f"config key {key!r} must not be null")
    if text.startswith("list[int]"):
        ints = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ints:
            raise UsageError(f"config key {key!r} must be a list of integers, got {value!r}")
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
