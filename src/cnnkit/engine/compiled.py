"""torch.compile around the engine's model: compile time kept apart, inference graphs frozen."""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

import torch
from torch import nn

from ..errors import TrainingError
from ..layers._fused_pool import fused_pool_compile_seconds, fused_pooling
from .compile_cache import (
    compile_key,
    compile_pays,
    expected_compile_seconds,
    record_compile_seconds,
    use_persistent_cache,
)


def weights_version(model: nn.Module) -> tuple:
    """Each parameter's and buffer's storage and version counter: any in-place update (an
    optimizer step, ``load_state_dict``) or replaced tensor changes it."""
    return tuple((t.data_ptr(), t._version) for t in [*model.parameters(), *model.buffers()])


class CompiledForward:
    """Calls a model eagerly or through ``torch.compile`` and keeps the compiling seconds.

    Args:
        model: the eager model (its state_dict and checkpoints stay the eager ones).
        compile: run it through ``torch.compile``; ``'auto'`` (with ``freeze`` only, else eager):
            start eagerly and compile once the work left (the pass's images, plus as many as
            were served before, or ``expected_images``) times the measured per-image saving
            exceeds the compile seconds expected (``compile_cache``); a compiler that fails then
            gives one warning and eager inference.
        freeze: inference only: the weights become graph constants, folded and prepacked by
            inductor (faster CPU inference); weights changed afterwards compile again.
    """

    def __init__(self, model: nn.Module, *, compile: bool | str = False, freeze: bool = False) -> None:
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
        self.model = model
        # 'auto' compiles on the CPU, where the saving was measured; elsewhere it stays eager.
        cpu = all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
        self.auto = compile == "auto" and freeze and cpu
        self.compile = compile is True
        self.freeze = (self.compile or self.auto) and freeze
        if self.compile or self.auto:
            use_persistent_cache()  # before inductor's config is imported: that sets its default
        self.expected_images = 0  # 'auto': images the caller expects in all (a hint)
        self.served = 0  # images through inference passes
        self._pass: list[int] = [0, 0]  # this pass's images, and those done
        self._eager_best: float | None = None  # 'auto': eager seconds per image (best batch)
        self._key = ""
        self.fused_pool = False  # 2x2 max-pools through the compiled kernels (CPU, not with compile)
        self.seconds = 0.0
        self._compiled: Any = None
        self._modes: set[bool] = set()  # train / eval graphs already compiled
        self._frozen_key: tuple | None = None

    def _net(self, x: torch.Tensor) -> nn.Module:
        if not self.compile:
            return self.model
        if self._compiled is None:
            # One eager call first: lazy layers materialise and drop their hooks, which the
            # compiler cannot trace. Eval mode and no_grad: no BatchNorm statistics change.
            mode = self.model.training
            self.model.eval()
            with torch.no_grad():
                self.model(x[:1])
            self.model.train(mode)
            # Frozen graphs are static: the caller pads the last batch, and shapes made dynamic by
            # other compiles of the same forward code broke frozen channels-last graphs.
            self._compiled = torch.compile(self.model, dynamic=False if self.freeze else None)
        return self._compiled

    @property
    def pads(self) -> bool:
        """Whether inference pads its last batch to the batch size (one static frozen graph)."""
        return self.compile and self.freeze

    def __call__(self, x: torch.Tensor, fn: Any = None) -> Any:
        """``fn(net, x)`` (default ``net(x)``) with the compiled net; the first compiled call in a
        mode (train / eval) is timed, and its failure becomes one TrainingError."""
        first = self.compile and self.model.training not in self._modes
        if self.fused_pool:
            use_persistent_cache()
        if self.freeze and self.compile and torch.is_inference_mode_enabled() and not x.is_inference():
            x = x.clone()  # every batch an inference tensor: one guard set, no second graph
        if self.freeze and not self._key:
            self._key = compile_key(self.model, x)
        start = time.perf_counter()
        try:
            with fused_pooling(self.fused_pool and not self.compile), self._freezing():
                net = self._net(x)
                out = fn(net, x) if fn is not None else net(x)
            if self.freeze and not self.model.training:
                self._after_batch(len(x), time.perf_counter() - start, first)
            return out
        except Exception as exc:
            if not first:
                raise
            if self.auto:
                return self._fall_back(exc, x, fn)
            detail = (str(exc).strip().splitlines() or [""])[0]
            raise TrainingError(
                f"torch.compile could not compile {type(self.model).__name__} "
                f"({type(exc).__name__}: {detail}); run without --compile (compile=False)"
            ) from exc
        finally:
            if first and not self.model.training:
                self._mark(start)

    def _after_batch(self, n: int, seconds: float, compiled_now: bool) -> None:
        """Counts the batch, records a first frozen compile's seconds, and ('auto') decides after
        the second eager batch on (the first one warms oneDNN up) whether compiling pays."""
        self._pass[1] += n
        if compiled_now:
            record_compile_seconds(self._key, seconds)
        if self.compile or not self.auto:
            return
        if self._pass[1] > n:  # not the pass's first batch
            per_image = seconds / max(n, 1)
            self._eager_best = per_image if self._eager_best is None else min(self._eager_best, per_image)
        if self._eager_best is None:
            return
        left = self._pass[0] - self._pass[1]
        work = max(left + self.served, self.expected_images - self.served - self._pass[1])
        if left > 0 and compile_pays(work, self._eager_best, expected_compile_seconds(self._key or "")):
            self.compile = True

    def _fall_back(self, exc: Exception, x: torch.Tensor, fn: Any) -> Any:
        """'auto' after a failed compile: one warning, then eager from here on."""
        detail = (str(exc).strip().splitlines() or [""])[0]
        warnings.warn(
            f"torch.compile could not compile {type(self.model).__name__} ({type(exc).__name__}: "
            f"{detail}); inference runs eagerly (same predictions, slower)",
            RuntimeWarning,
            stacklevel=3,
        )
        self.auto = self.compile = self.freeze = False
        self._compiled = None
        return fn(self.model, x) if fn is not None else self.model(x)

    def after_backward(self, start: float | None) -> None:
        """A training step's compiling includes its backward: call after ``backward()``."""
        if start is not None:
            self._mark(start)

    def train_clock(self) -> float | None:
        """A start time when the next training call is the first compiled one."""
        return time.perf_counter() if self.compile and True not in self._modes else None

    def _mark(self, start: float) -> None:
        self.seconds += time.perf_counter() - start
        self._modes.add(self.model.training)

    def _freezing(self) -> contextlib.AbstractContextManager:
        if not self.freeze or self.model.training or not self.compile:
            # eager calls ('auto' before it compiles) need no inductor (1-3 s to import)
            return contextlib.nullcontext()
        try:
            from torch._inductor import config as inductor_config
        except ImportError:  # a PyTorch without inductor: plain compile
            return contextlib.nullcontext()
        return inductor_config.patch(freezing=True)

    @contextlib.contextmanager
    def inference(self, images: int = 0) -> Any:
        """Around a pass of inference batches (``images`` in all): frozen graphs whose weights
        changed since are dropped first (they would give stale outputs), and the weights are
        noted after."""
        if self.freeze and self._frozen_key is not None and weights_version(self.model) != self._frozen_key:
            torch.compiler.reset()
            self._modes.discard(False)
        self._pass = [images, 0]
        with self.pool_clock():
            yield
        self.served += self._pass[1] or images
        if self.freeze:
            self._frozen_key = weights_version(self.model)

    @contextlib.contextmanager
    def pool_clock(self) -> Any:
        """Adds the fused pooling kernels' compiling within the block to ``seconds``."""
        before = fused_pool_compile_seconds()
        try:
            yield
        finally:
            self.seconds += fused_pool_compile_seconds() - before
