"""Int8 first, float where the class could change: the float model's predictions at int8 speed.

An int8 copy of the classifier (:mod:`.quantize`) scores every image. Where its two highest
logits lie within ``bound`` output steps of each other, the float model scores the image again
and its logits replace the int8 ones. Int8 logits are multiples of one output step, so the
top-2 gap is a whole number of steps; the class can only differ from the float model's where
int8 overstates that gap by at least the gap itself. The bound is the largest such
overstatement on the calibration images (training images, never the test set) plus half a step,
and at least two steps.

On the shipped course CNN the largest overstatement was 1.1-1.6 steps on 70,000 Fashion-MNIST
images; about 5 % of the images are scored again, and every one of the 70,000 predictions was
the float model's (docs/performance.md). The bound is measured, not proven: a model whose
int8 error grows on images unlike its calibration set could still differ on an image.

The quantized copy is cached (``~/.cache/cnnkit/int8``), keyed by the float weights, the
calibration images, the float precision and the PyTorch version: building it runs the
calibration images through histogram observers (0.3 s for 256 images on the course CNN),
loading it takes about 0.05 s.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...engine.compile_cache import cache_root
from ...engine.compiled import weights_version
from .quantize import (
    Int8Classifier,
    int8_from_state_dict,
    quantize_int8,
    quantized_engine,
    quiet_quantization,
)

__all__ = ["CALIBRATION_IMAGES", "Int8Cascade", "cascade_pays", "int8_cascade"]

CALIBRATION_IMAGES = 256
MIN_BOUND_STEPS = 2.0
BOUND_MARGIN_STEPS = 0.5
INT8_BATCH = 1000  # the int8 kernels ran fastest at 1,000 images a batch (256: ~15 % slower)
# Images from which the cascade is used. With the course CNN's figures on a Zen 3 (float 14,136
# img/s, cascade 20,596: 22 us saved per image; bench/results/2026-12-08_011955.json) loading
# the copy (0.04 s) pays back after about 2,000 images and building it (0.33 s) after about
# 15,000: a 10,000-image test set builds it at a cost of about 0.1 s, and every later
# evaluation of the run loads it.
MIN_IMAGES_CACHED = 2_000
MIN_IMAGES_BUILT = 10_000
_FORMAT = 1
_KEEP_FILES = 32


@dataclass
class Int8Cascade:
    """An int8 classifier and the gap under which its images are scored again in float.

    Attributes:
        net: the int8 copy (float Tensor[N, C, H, W] in, float logits Tensor[N, K] out).
        step: its logits' quantization step.
        bound: images whose int8 top-2 gap is under ``bound`` steps are scored again.
        source: ``"built"`` (calibrated now) or ``"cache"``.
        seconds: the time building or loading it took.
        images, rescored: images scored so far, and how many of them again in float.
    """

    net: Int8Classifier
    step: float
    bound: float
    source: str
    seconds: float
    images: int = 0
    rescored: int = 0
    weights: tuple = ()

    def fits(self, model: nn.Module) -> bool:
        """Whether ``model``'s weights are still those the int8 copy was made of (no training
        step, no loaded state since: the same tensors at the same versions)."""
        return self.weights == weights_version(model)

    def uncertain(self, logits: torch.Tensor) -> torch.Tensor:
        """Bool Tensor[N]: the rows of int8 ``logits`` Tensor[N, K] to score again in float."""
        if logits.shape[1] < 2:
            return torch.ones(len(logits), dtype=torch.bool)
        top2 = logits.topk(2, dim=1).values
        return top2[:, 0] - top2[:, 1] < self.bound * self.step

    def summary(self) -> dict[str, Any]:
        return {
            "engine": self.net.engine,
            "bound_steps": round(self.bound, 3),
            "source": self.source,
            "setup_seconds": round(self.seconds, 3),
            "images": self.images,
            "rescored": self.rescored,
        }


def cascade_pays(images: int, model: nn.Module, calibration: torch.Tensor, precision: str = "") -> bool:
    """Whether an evaluation of ``images`` images repays the cascade's set-up: a cached copy
    from ``MIN_IMAGES_CACHED`` images, one to build from ``MIN_IMAGES_BUILT``."""
    if images >= MIN_IMAGES_BUILT:
        return True
    return images >= MIN_IMAGES_CACHED and _cache_file(model, calibration, precision).is_file()


def int8_cascade(
    model: nn.Module,
    calibration: torch.Tensor,
    reference: Callable[[torch.Tensor], torch.Tensor],
    *,
    precision: str = "",
    cache: bool = True,
) -> Int8Cascade:
    """The cascade of ``model``: loaded from the cache, else calibrated and measured now.

    Args:
        model: a sequential cnnkit classifier (see ``quantize.float_chain``), in eval mode.
        calibration: float Tensor[N, C, H, W] on the CPU, prepared as the model expects
            (``CALIBRATION_IMAGES`` training images).
        reference: the float model's logits Tensor[N, K] for prepared images: the predictions
            the cascade keeps (with the precision the evaluation uses).
        precision: the reference's precision (part of the cache key), e.g. ``"bf16"``.
        cache: read and write the cached copy.

    Raises:
        ValueError: a layer without an int8 kernel (names it), bad calibration images.
        RuntimeError: no quantized engine in this PyTorch.
    """
    start = time.perf_counter()
    weights = weights_version(model)
    engine = quantized_engine()
    path = _cache_file(model, calibration, precision, engine)
    if cache:
        loaded = _load(model, path, engine)
        if loaded is not None:
            net, step, bound = loaded
            return Int8Cascade(net, step, bound, "cache", time.perf_counter() - start, weights=weights)
    net = quantize_int8(model, calibration, engine=engine)
    step = _output_step(net)
    with torch.inference_mode():
        int8_logits = net(calibration)
        float_logits = reference(calibration).float()
    bound = max(MIN_BOUND_STEPS, _overstatement(int8_logits, float_logits, step) + BOUND_MARGIN_STEPS)
    if cache:
        _save(path, net, step, bound)
    return Int8Cascade(net, step, bound, "built", time.perf_counter() - start, weights=weights)


def _overstatement(int8_logits: torch.Tensor, float_logits: torch.Tensor, step: float) -> float:
    """The most, in steps, by which int8 overstates the gap between its top class and another
    class that lies within a few steps of it (farther ones cannot take the top place)."""
    top = int8_logits.argmax(1, keepdim=True)
    int8_gap = int8_logits.gather(1, top) - int8_logits
    over = (int8_gap - (float_logits.gather(1, top) - float_logits)) / step
    over = over.masked_fill(int8_gap > 8 * step, -math.inf).scatter(1, top, -math.inf)
    worst = float(over.max()) if over.numel() else 0.0
    return worst if math.isfinite(worst) else 0.0


def _output_step(net: Int8Classifier) -> float:
    """The scale of the last quantized layer's output (its logits' step)."""
    for module in reversed(list(net.net)):
        scale = getattr(module, "scale", None)
        if scale is not None:
            return float(scale)
    raise ValueError("the int8 model has no quantized output layer")


def _cache_file(model: nn.Module, calibration: torch.Tensor, precision: str, engine: str = "") -> Path:
    digest = hashlib.sha256()
    for name, tensor in [*model.state_dict().items(), ("calibration", calibration)]:
        digest.update(name.encode())
        if isinstance(tensor, torch.Tensor):
            t = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(str((t.dtype, tuple(t.shape))).encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    engine = engine or quantized_engine()
    digest.update(f"{type(model).__name__}|{engine}|{precision}|{torch.__version__}|{_FORMAT}".encode())
    return cache_root() / "int8" / f"{digest.hexdigest()[:32]}.pt"


def _load(model: nn.Module, path: Path, engine: str) -> tuple[Int8Classifier, float, float] | None:
    """The cached copy, or None where there is none or it cannot be read (it is then rebuilt)."""
    try:
        with quiet_quantization(), warnings.catch_warnings():
            # quantized tensors load through the old storage type
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated", category=UserWarning)
            saved = torch.load(path, map_location="cpu", weights_only=True)
        net = int8_from_state_dict(model, saved["state_dict"], engine)
        return net, float(saved["step"]), float(saved["bound"])
    except FileNotFoundError:
        return None
    except Exception:  # a damaged or foreign file in the cache: build a new one over it
        return None


def _save(path: Path, net: Int8Classifier, step: float, bound: float) -> None:
    """Best effort: a read-only or full cache folder only costs the next run a rebuild."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"state_dict": net.state_dict(), "step": step, "bound": bound}, tmp)
        os.replace(tmp, path)
        files = sorted(path.parent.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[_KEEP_FILES:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
