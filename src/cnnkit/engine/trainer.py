"""The one training loop: any task (``engine.task.Task``), extended by callbacks, with exact resume."""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TrainingError, warn_caller
from . import distributed
from .callbacks import Callback, DivergenceGuard, History, ProgressBar
from .checkpoint import load_checkpoint, save_checkpoint
from .compiled import CompiledForward
from .device import pick_device
from .optimizers import make_optimizer
from .perf import tune_cpu_allocator
from .task import Task
from .threads import ThreadController
from .training_state import restore_training_state, training_state
from .weight_average import WeightAverage

AMP = (None, "bf16", "fp16")
# fused_pool='auto' compiles the pooling kernels for fits of at least this many training samples
# (epochs × samples): a hongong_cnn epoch of 48,000 saves about 1 s with them, and compiling
# takes 2-3 s in a new process, about 15 s the first time on a machine (docs/performance.md).
FUSED_POOL_MIN_IMAGES = 500_000


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also makes torch refuse nondeterministic ops."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


class Trainer:
    """Trains ``model`` on ``task``: the one loop every cnnkit task runs through.

    Args:
        model: the task's model.
        task: what to learn (batches, the loss of a step, validation); see ``engine.task.Task``.
        optimizer: a name from OPTIMIZERS, a ready optimizer, or None for inference only
            (``evaluate``; ``fit`` refuses), e.g. for an int8 model.
        lr: learning rate (the course: Adam with 1e-3).
        weight_decay: L2 penalty passed to the optimizer.
        callbacks: extra callbacks; a History is always kept in ``self.history``.
        device: a device name or None to pick CUDA / MPS / CPU.
        seed: seeds weights-independent randomness (order, augmentation, dropout) per epoch.
        scheduler: optional function (optimizer, total_steps) -> LR scheduler stepped per batch.
        amp: None, 'bf16' or 'fp16' autocast around each training step's forward pass.
        channels_last: move the model (and the task's images) to the channels-last format.
        checkpoint_path: where ``last.ckpt`` (resumable) is written before the first step and
            after every epoch, so an interrupt at any point leaves a state to resume from.
        check_finite: stop with a TrainingError on a NaN/inf loss, and on non-finite weights or
            validation loss at the end of an epoch, before any checkpoint of that epoch is written.
        max_grad_norm: if set, compute the total gradient norm every step, stop with a
            TrainingError when it is NaN/inf (before the update reaches the weights), and clip
            it to this value.
        compile: run the model through ``torch.compile`` (off by default: on the CPUs measured
            it trained slower, docs/performance.md); the first compiled calls' seconds are kept
            apart in ``compile_seconds``. An inference-only Trainer (``optimizer=None``) freezes
            the weights into the graph; weights changed afterwards compile again
            (``torch.compiler.reset``: other compiled models in the process compile again too).
            ``'auto'`` (inference-only Trainers on the CPU; eager otherwise): compile once the
            work amortizes it (``CompiledForward``).
        fused_pool: on a CPU, run 2×2 max-pools (and a ReLU right after one) through compiled
            kernels that keep a small winner code instead of PyTorch's int64 indices: the same
            values and gradients bit for bit, faster training (docs/performance.md). ``'auto'``
            turns them on for a ``fit`` of at least FUSED_POOL_MIN_IMAGES samples (epochs ×
            samples) and keeps that choice for the inference after it. Ignored with ``compile``,
            on other devices and with ``CNNKIT_FUSED_POOL=0`` in the environment.
        sync_bn: under data-parallel training, BatchNorm layers normalise with the global batch's
            statistics (SyncBatchNorm) instead of each rank's own (engine/distributed.py).
        divergence: stop (or warn, ``on_divergence="warn"``) when an epoch's training loss is
            this many times the loss training started at (``callbacks.DivergenceGuard``);
            None turns the check off.
        on_divergence: ``"stop"`` (a TrainingError) or ``"warn"`` (one line on stderr).
        threads: a ``ThreadController`` that re-checks the free cores between steps (and at every
            epoch's start) and sets torch's intra-op threads; inference loops use it between
            batches. None keeps the thread count as it is.
        ema: keep an exponential moving average of the weights with this decay (Keras'
            ``use_ema``; ``engine/weight_average.py``): validation, the saved and restored best
            weights and the model after ``fit`` are the average; training goes on from its own
            weights. None (the default) keeps no average.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        *,
        optimizer: str | torch.optim.Optimizer | None = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        callbacks: Sequence[Callback] = (),
        device: str | torch.device | None = None,
        seed: int = 42,
        scheduler: Callable[[torch.optim.Optimizer, int], Any] | None = None,
        amp: str | None = None,
        channels_last: bool = False,
        checkpoint_path: str | os.PathLike[str] | None = None,
        check_finite: bool = True,
        max_grad_norm: float | None = None,
        compile: bool | str = False,
        fused_pool: bool | str = False,
        sync_bn: bool = False,
        divergence: float | None = 1e3,
        on_divergence: str = "stop",
        threads: ThreadController | None = None,
        ema: float | None = None,
    ) -> None:
        if not isinstance(task, Task):
            raise TypeError(f"task must be a cnnkit.engine.Task, got {type(task).__name__}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        if fused_pool not in (True, False, "auto"):
            raise ValueError(f"fused_pool must be True, False or 'auto', got {fused_pool!r}")
        if amp not in AMP:
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
        self.task = task
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        tune_cpu_allocator(self.device)
        self.model = model.to(self.device)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.world = distributed.current()
        if sync_bn and self.world.active:
            self.model = distributed.convert_sync_batchnorm(self.model, self.device)
        if self.world.rank:  # dropout and other draws differ between ranks (order does not)
            seed_everything(seed * 1_000_003 + self.world.rank)
        if isinstance(optimizer, str):
            optimizer = make_optimizer(
                optimizer, [p for p in model.parameters() if p.requires_grad], lr, weight_decay
            )
        self.optimizer = optimizer
        self.scheduler_factory = scheduler
        self.scheduler: Any = None
        self.history = History()
        # The divergence check (for every task) runs before the callbacks that save weights.
        guard = [] if divergence is None else [DivergenceGuard(divergence, on_divergence)]
        self.callbacks: list[Callback] = [self.history, *guard, *callbacks]
        self.seed = seed
        self.amp = amp
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.check_finite = check_finite
        self.max_grad_norm = max_grad_norm
        self._stopped_at_checkpoint = False  # the loaded checkpoint was written after an early stop
        self._restored = False  # state loaded from a checkpoint since the last fit (a resume)
        self.compile = compile
        self.fused_pool = fused_pool
        self.threads = threads
        self.weight_average = WeightAverage(ema) if ema is not None else None
        net = distributed.wrap_model(self.model, self.device) if optimizer is not None else self.model
        self.forward = CompiledForward(net, compile=compile, freeze=optimizer is None)
        self.forward.fused_pool = fused_pool is True and self.device.type == "cpu"
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.epochs = 0
        self.steps_per_epoch = 0
        self.stop_training = False
        self.validated = True  # whether the epoch that just ended ran validation (fit's validation_freq)
        for cb in self.callbacks:
            cb.set_trainer(self)

    @property
    def compile_seconds(self) -> float:
        """Seconds the first compiled calls took (compiling included), also inside epoch times."""
        return self.forward.seconds

    def autocast(self) -> contextlib.AbstractContextManager:
        """The training forward pass's precision (``amp``)."""
        if self.amp is None:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ----------------------------------------------------------------- training
    def fit(
        self,
        train: Any,
        val: Any = None,
        *,
        epochs: int = 20,
        batch_size: int = 32,
        verbose: int = 1,
        callbacks: Sequence[Callback] = (),
        validation_freq: int = 1,
    ) -> History:
        """Train for up to ``epochs`` (counting epochs already done when resuming).

        Args:
            train: the task's training data.
            val: the task's validation data, or None.
            epochs: the last epoch to reach (Keras' ``epochs``).
            batch_size: samples per training step.
            verbose: as in Keras: 0 silent, 1 a progress bar per epoch (one line per epoch when
                the output is not a terminal or notebook), 2 one line per epoch. Ignored when a
                ProgressBar is among the callbacks already.
            callbacks: callbacks for this call only, after the Trainer's own.
            validation_freq: validate after every so many epochs (Keras' ``validation_freq``),
                and after the last one; early stopping's patience then counts validations.
                The epochs in between have no ``val_`` metrics.

        Returns:
            The History (per-epoch training parts, ``val_`` metrics, ``lr``: the rate of the
            epoch's last step, ``seconds``).

        Raises:
            TrainingError: a non-finite loss, gradient, weight or validation loss (training
                stops there and no checkpoint is written for it).
            ValueError: no training samples, epochs / batch size below 1, or an unknown verbose.
        """
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        if isinstance(validation_freq, bool) or not isinstance(validation_freq, int) or validation_freq < 1:
            raise ValueError(f"validation_freq must be an int >= 1, got {validation_freq!r}")
        extra = list(callbacks)
        if verbose and not any(isinstance(cb, ProgressBar) for cb in [*self.callbacks, *extra]):
            extra.append(ProgressBar(bar=None if verbose == 1 else False))
        for cb in extra:
            cb.set_trainer(self)
        self.callbacks += extra
        try:
            return self._fit(train, val, epochs, batch_size, validation_freq)
        finally:
            self.callbacks = [cb for cb in self.callbacks if all(cb is not e for e in extra)]

    def _fit(self, train: Any, val: Any, epochs: int, batch_size: int, validation_freq: int) -> History:
        self._need_optimizer("fit")
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
        num = self.task.num_samples(train)
        if num == 0:
            raise ValueError(f"{getattr(train, 'name', 'the training set')} has no samples to train on")
        self.epochs = epochs
        self.steps_per_epoch = math.ceil(num / (batch_size * self.world.size))
        if self.fused_pool == "auto":
            self.forward.fused_pool = (
                self.device.type == "cpu" and (epochs - self.epoch) * num >= FUSED_POOL_MIN_IMAGES
            )
        if self.scheduler_factory is not None and self.scheduler is None:
            self.scheduler = self.scheduler_factory(self.optimizer, epochs * self.steps_per_epoch)
        # A run that stopped early and was then interrupted (say, while testing) stays stopped on resume.
        self.stop_training, self._stopped_at_checkpoint = self._stopped_at_checkpoint, False
        logs: dict[str, Any] = {}
        for cb in self.callbacks:
            cb.on_train_begin(logs)
        if self.checkpoint_path is not None and self.epoch == 0 and self.global_step == 0:
            # So that an interrupt during the first epoch also leaves something to resume from.
            self.save_checkpoint(self.checkpoint_path)
        data = self.task.prepare_fit(self, train)
        first = epochs if self.stop_training else self.epoch
        if first >= epochs and not self.stop_training and not self._restored:
            # Keras' fit(epochs=5) run twice trains 10 epochs; here epochs is the last one to reach.
            warn_caller(
                f"fit(epochs={epochs}) trained nothing: this Trainer has already trained {self.epoch} "
                f"epochs, and epochs is the last epoch to reach (Keras' epochs with initial_epoch="
                f"{self.epoch}). For N more epochs give epochs={self.epoch} + N"
            )
        self._restored = False
        for epoch in range(first, epochs):
            for cb in self.callbacks:
                cb.on_epoch_begin(epoch, logs)
            self.poll_threads(now=True)
            start = time.perf_counter()
            if self.weight_average is not None:
                self.weight_average.swap_out(self.model)
            with self.forward.pool_clock():
                logs = self._train_epoch(data, batch_size, epoch)
            distributed.broadcast_buffers(self.model)
            self._check_finite_weights(epoch)
            if self.weight_average is not None:  # validated, kept and saved from here on
                self.weight_average.swap_in(self.model)
                distributed.broadcast_buffers(self.model)  # each rank averaged its own statistics
            # Whether this epoch validates: the callbacks that monitor a val_ metric skip the others.
            self.validated = (epoch + 1) % validation_freq == 0 or epoch + 1 == epochs
            if val is not None and self.task.num_samples(val) and self.validated:
                val_logs = self.task.validate(self, val)
                loss = val_logs.get("loss")
                if self.check_finite and loss is not None and not math.isfinite(loss):
                    raise TrainingError(
                        f"validation loss became {loss} after epoch {epoch + 1} (global step "
                        f"{self.global_step}); training stopped and no checkpoint was written for it. "
                        "Try a lower --lr"
                    )
                logs.update({f"val_{k}": v for k, v in val_logs.items()})
            logs["lr"] = self.epoch_lr
            logs["seconds"] = time.perf_counter() - start
            for cb in self.callbacks:
                cb.on_epoch_end(epoch, logs)
            self.epoch = epoch + 1
            if self.checkpoint_path is not None:
                self.save_checkpoint(self.checkpoint_path)
            if self.stop_training:
                break
        for cb in self.callbacks:
            cb.on_train_end(logs)
        return self.history

    def _train_epoch(self, data: Any, batch_size: int, epoch: int) -> dict[str, float]:
        self.model.train()
        # One generator per epoch, derived from the seed: order and augmentation need no saved state.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        sums: dict[str, list[float]] = {}
        world = self.world
        # The rate the epoch's last step used: after it the scheduler already points one step on
        # (past the end of a one-cycle schedule, an extrapolated and possibly negative rate).
        self.epoch_lr = self.optimizer.param_groups[0]["lr"]
        # Under data-parallel training the task makes the global batch of world.size × batch_size
        # and each rank keeps its share: the samples and augmentation draws of one process.
        for step, batch in enumerate(self.task.batches(self, data, batch_size * world.size, generator)):
            share = 1.0
            if world.active:
                batch, n_local, n_global = self.task.shard(batch, world)
                if n_global < world.size:  # too few samples to give every rank one: skipped
                    continue
                # DDP averages the ranks' gradients; a share's weight makes a last, uneven batch's
                # average the gradient of the global batch's mean loss.
                share = n_local * world.size / n_global
            clock = self.forward.train_clock()
            with self.autocast():
                out = self.task.train_step(self, batch)
            loss = out.pop("loss")
            n = out.pop("n", 1)
            units = out.pop("loss_units", None)  # a loss that is a mean over these (pixels), not samples
            weight = n if units is None else units
            value = float(loss.detach())
            if world.active:  # every rank sees the global batch's loss and stops together
                total, count = distributed.sum_across([value * weight, weight])
                value = total / count if count else 0.0
                if units is not None:  # the share of the global batch's units makes the mean exact
                    share = units * world.size / count if count else 0.0
            where = f"epoch {epoch + 1}, step {step + 1} (global step {self.global_step + 1})"
            if self.check_finite and not math.isfinite(value):
                raise TrainingError(
                    f"loss became {value} at {where}; training stopped and no checkpoint was written "
                    "for it. Try a lower --lr"
                )
            self.optimizer.zero_grad(set_to_none=True)
            (loss * share if share != 1.0 else loss).backward()
            self.forward.after_backward(clock)
            if self.max_grad_norm is not None:
                params = [p for group in self.optimizer.param_groups for p in group["params"]]
                norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm))
                if not math.isfinite(norm):
                    raise TrainingError(
                        f"gradient norm became {norm} at {where}; training stopped before the update "
                        "and no checkpoint was written for it. Try a lower --lr"
                    )
            self.epoch_lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            if self.weight_average is not None:
                self.weight_average.update(self.model)
            if self.scheduler is not None:
                self.scheduler.step()
            self.global_step += 1
            self.poll_threads()
            for key, part in {"loss": value, **out}.items():
                num, den = part if isinstance(part, tuple) else (part * n, n)
                acc = sums.setdefault(key, [0.0, 0.0])
                acc[0] += float(num)
                acc[1] += float(den)
            batch_logs = {k: num / max(den, 1e-12) for k, (num, den) in sums.items()}
            for cb in self.callbacks:
                cb.on_batch_end(step, batch_logs)
        sums = distributed.sum_dict(sums)  # the epoch over all ranks' samples
        return {k: num / den if den else 0.0 for k, (num, den) in sums.items()}

    def _check_finite_weights(self, epoch: int) -> None:
        # A finite loss can still be followed by an inf gradient on the epoch's last step, which
        # leaves NaN weights that the next loss check would only see after they were saved.
        if not self.check_finite:
            return
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise TrainingError(
                    f"weights became non-finite ({name}) during epoch {epoch + 1} (global step "
                    f"{self.global_step}); training stopped and no checkpoint was written for it. "
                    "Try a lower --lr or max_grad_norm"
                )

    def poll_threads(self, now: bool = False) -> None:
        """Let the thread controller look at the free cores (``now``: without waiting its interval)."""
        if self.threads is not None:
            self.threads.check() if now else self.threads.poll()

    def evaluate(self, data: Any) -> dict[str, Any]:
        """The task's test report on ``data`` (eval mode)."""
        return self.task.evaluate(self, data)

    # ----------------------------------------------------------------- resume
    def _need_optimizer(self, what: str) -> None:
        if self.optimizer is None:
            raise ValueError(
                f"this Trainer was built with optimizer=None (inference only) and cannot {what}; "
                "give it an optimizer"
            )

    def state(self) -> dict[str, Any]:
        """Everything exact resume needs (``engine.training_state``)."""
        self._need_optimizer("save a training state")
        return training_state(self)

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Everything exact resume needs, written atomically (by rank 0; every rank must call it)."""
        state = self.state()
        if self.world.main:
            save_checkpoint(path, state)

    def load_checkpoint(self, path: str | os.PathLike[str], total_steps: int | None = None) -> None:
        """Restore model, optimizer moments, scheduler, counters, callback states and RNGs.

        The stateful callbacks must be of the same types, in the same order, as when it was saved.
        """
        # On the CPU: torch.set_rng_state takes CPU tensors only; load_state_dict moves the rest.
        self.load_state(load_checkpoint(path, map_location="cpu"), total_steps, source=str(path))

    def load_state(
        self, body: dict[str, Any], total_steps: int | None = None, source: str = "checkpoint"
    ) -> None:
        """Restore from a verified checkpoint body (``load_checkpoint``), as ``load_checkpoint`` does."""
        restore_training_state(self, body, total_steps, source)
        self._restored = True
