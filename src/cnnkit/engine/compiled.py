"""torch.compile around the engine's model: compile time kept apart, inference graphs frozen."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from torch import nn

from ..errors import TrainingError
from ..layers._fused_pool import fused_pool_compile_seconds, fused_pooling


class CompiledForward:
    """Calls a model eagerly or through ``torch.compile`` and keeps the compiling seconds.

    Args:
        model: the eager model (its state_dict and checkpoints stay the eager ones).
        compile: run it through ``torch.compile``.
        freeze: inference only: the weights become graph constants, folded and prepacked by
            inductor (faster CPU inference); weights changed afterwards compile again.
    """

    def __init__(self, model: nn.Module, *, compile: bool = False, freeze: bool = False) -> None:
        self.model = model
        self.compile = compile
        self.freeze = compile and freeze
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

    def __call__(self, x: torch.Tensor, fn: Any = None) -> Any:
        """``fn(net, x)`` (default ``net(x)``) with the compiled net; the first compiled call in a
        mode (train / eval) is timed, and its failure becomes one TrainingError."""
        first = self.compile and self.model.training not in self._modes
        start = time.perf_counter()
        try:
            with fused_pooling(self.fused_pool and not self.compile), self._freezing():
                net = self._net(x)
                return fn(net, x) if fn is not None else net(x)
        except Exception as exc:
            if not first:
                raise
            detail = (str(exc).strip().splitlines() or [""])[0]
            raise TrainingError(
                f"torch.compile could not compile {type(self.model).__name__} "
                f"({type(exc).__name__}: {detail}); run without --compile (compile=False)"
            ) from exc
        finally:
            if first and not self.model.training:
                self._mark(start)

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
        if not self.freeze or self.model.training:
            return contextlib.nullcontext()
        try:
            from torch._inductor import config as inductor_config
        except ImportError:  # a PyTorch without inductor: plain compile
            return contextlib.nullcontext()
        return inductor_config.patch(freezing=True)

    def _weights_key(self) -> tuple:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return tuple((t.data_ptr(), t._version) for t in tensors)

    @contextlib.contextmanager
    def inference(self) -> Any:
        """Around a pass of inference batches: frozen graphs whose weights changed since are
        dropped first (they would give stale outputs), and the weights are noted after."""
        if self.freeze and self._frozen_key is not None and self._weights_key() != self._frozen_key:
            torch.compiler.reset()
            self._modes.discard(False)
        with self.pool_clock():
            yield
        if self.freeze:
            self._frozen_key = self._weights_key()

    @contextlib.contextmanager
    def pool_clock(self) -> Any:
        """Adds the fused pooling kernels' compiling within the block to ``seconds``."""
        before = fused_pool_compile_seconds()
        try:
            yield
        finally:
            self.seconds += fused_pool_compile_seconds() - before
