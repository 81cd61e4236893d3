"""A short fit loop, extended by callbacks (Keras style), with exact resume."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.arrays import ArrayDataset, iterate_batches, num_batches
from ..errors import TrainingError
from ..layers._fused_pool import fused_pool_compile_seconds, fused_pooling
from .augment import flip_tta
from .callbacks import Callback, History
from .checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .device import pick_device
from .metrics import classification_report, confusion_matrix
from .perf import tune_cpu_allocator

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
# fused_pool='auto' compiles the pooling kernels for fits of at least this many training images
# (epochs × images): a hongong_cnn epoch of 48,000 saves about 1 s with them, and compiling
# takes 2-3 s in a new process, about 15 s the first time on a machine (docs/performance.md).
FUSED_POOL_MIN_IMAGES = 500_000
# What Trainer.state() writes and load_state() needs.
STATE_KEYS = ("epoch", "global_step", "seed", "model", "optimizer", "scheduler", "callbacks", "rng")


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


KERAS_EPSILON = 1e-7  # keras.optimizers.Adam / AdamW / RMSprop default


def make_optimizer(
    name: str, params: Any, lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """Build an optimizer by name (foreach kernels where PyTorch has them).

    Adam, AdamW and RMSprop take Keras's defaults (epsilon 1e-7; RMSprop rho 0.9), which the
    course's results were trained with; PyTorch's own are epsilon 1e-8 and alpha 0.99.
    """
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=KERAS_EPSILON, weight_decay=weight_decay, foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, eps=KERAS_EPSILON, weight_decay=weight_decay, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay, foreach=True
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=lr, alpha=0.9, eps=KERAS_EPSILON, weight_decay=weight_decay, foreach=True
        )
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


# A training set up to this size goes to an accelerator once per fit: its batches are then
# indexed there and never cross the bus again (Fashion-MNIST's 60,000 images are 47 MB).
DEVICE_RESIDENT_BYTES = 1 << 30


class Trainer:
    """Trains a classifier on in-memory data.

    Args:
        model: any module mapping Tensor[N, C, H, W] to logits Tensor[N, K].
        optimizer: a name from OPTIMIZERS, a ready optimizer, or None for inference only
            (``logits``, ``predict``, ``evaluate``; ``fit`` refuses), e.g. for an int8 model.
        lr: learning rate (the course: Adam with 1e-3).
        weight_decay: L2 penalty passed to the optimizer.
        label_smoothing: cross-entropy label smoothing.
        callbacks: extra callbacks; a History is always kept in ``self.history``.
        device: a device name or None to pick CUDA / MPS / CPU.
        seed: seeds weights-independent randomness (shuffling, dropout) for repeatable runs.
        normalize: (mean, std) per channel applied after scaling uint8 pixels to [0, 1].
        augment: optional function applied to each float training batch on the device.
        scheduler: optional function (optimizer, total_steps) -> LR scheduler stepped per batch.
        amp: None, 'bf16' or 'fp16' autocast.
        channels_last: move images and model to the channels-last memory format.
        tta: flip test-time augmentation in inference (mean logits of the image and its mirror).
        checkpoint_path: where ``last.ckpt`` (resumable) is written before the first step and
            after every epoch, so an interrupt at any point leaves a state to resume from.
        check_finite: stop with a TrainingError on a NaN/inf loss, and on non-finite weights or
            validation loss at the end of an epoch, before any checkpoint of that epoch is written.
        max_grad_norm: if set, compute the total gradient norm every step, stop with a
            TrainingError when it is NaN/inf (before the update reaches the weights), and clip
            it to this value.
        compile: run the model through ``torch.compile`` (off by default: on the CPUs measured
            it trained slower, docs/performance.md). The model itself, its state_dict and
            checkpoints stay the eager ones; the seconds the first compiled calls took
            (compiling included) are kept apart in ``compile_seconds``. An inference-only
            Trainer (``optimizer=None``) compiles with the weights frozen into the graph,
            where the compiler folds and prepacks them: faster inference on the CPU. If the
            weights change afterwards (an in-place update, ``load_state_dict``), the next
            ``logits`` call compiles again (``torch.compiler.reset``: other compiled models in
            the process compile again too, on their next call).
        fused_pool: on a CPU, run 2×2 max-pools (and a ReLU right after one) through compiled
            kernels that keep a small winner code instead of PyTorch's int64 indices: the same
            values and gradients bit for bit, faster training (docs/performance.md). The first
            batches compile them (added to ``compile_seconds``: about 2-3 s, about 15 s the
            first time on a machine); without a working compiler PyTorch's pooling runs, with
            one warning. ``'auto'`` (the fast preset) turns them on for a ``fit`` of at least
            FUSED_POOL_MIN_IMAGES training images (epochs × images), long enough to win back
            the compiling, and keeps that choice for the inference after it. Ignored with
            ``compile`` (the model's compiler fuses the pooling itself), on other devices and
            with ``CNNKIT_FUSED_POOL=0`` in the environment.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: str | torch.optim.Optimizer | None = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        label_smoothing: float = 0.0,
        callbacks: Sequence[Callback] = (),
        device: str | torch.device | None = None,
        seed: int = 42,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        scheduler: Callable[[torch.optim.Optimizer, int], Any] | None = None,
        amp: str | None = None,
        channels_last: bool = False,
        tta: bool = False,
        checkpoint_path: str | os.PathLike[str] | None = None,
        check_finite: bool = True,
        max_grad_norm: float | None = None,
        compile: bool = False,
        fused_pool: bool | str = False,
    ) -> None:
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        if fused_pool not in (True, False, "auto"):
            raise ValueError(f"fused_pool must be True, False or 'auto', got {fused_pool!r}")
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        tune_cpu_allocator(self.device)
        self.model = model.to(self.device)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if isinstance(optimizer, str):
            optimizer = make_optimizer(
                optimizer, [p for p in model.parameters() if p.requires_grad], lr, weight_decay
            )
        self.optimizer = optimizer
        self.scheduler_factory = scheduler
        self.scheduler: Any = None
        self.label_smoothing = label_smoothing
        self.history = History()
        self.callbacks: list[Callback] = [self.history, *callbacks]
        self.seed = seed
        self.normalize = normalize
        self.augment = augment
        if amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
        self.amp = amp
        self.tta = tta
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.check_finite = check_finite
        self.max_grad_norm = max_grad_norm
        self._stopped_at_checkpoint = False  # the loaded checkpoint was written after an early stop
        self.compile = compile
        self.fused_pool = fused_pool
        self._fused_now = fused_pool is True  # 'auto' decides in fit
        self.compile_seconds = 0.0
        self._compiled: Any = None
        self._compiled_modes: set[bool] = set()  # train / eval graphs already compiled
        self._frozen_key: tuple | None = None  # the weights an inference-only graph was frozen with
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.epochs = 0
        self.steps_per_epoch = 0
        self.stop_training = False
        for cb in self.callbacks:
            cb.set_trainer(self)

    # ----------------------------------------------------------------- data
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 Tensor[N, C, H, W] -> float on the device, scaled to [0, 1] and normalised."""
        if self.device.type == "cuda" and images.device.type == "cpu":
            images = images.pin_memory()  # so that the copy below runs while the GPU computes
        x = images.to(self.device, non_blocking=True)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if self.normalize is not None:
            mean = torch.as_tensor(self.normalize[0], device=x.device).view(1, -1, 1, 1)
            std = torch.as_tensor(self.normalize[1], device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _resident(self, data: ArrayDataset) -> ArrayDataset:
        """``data`` on the accelerator when it fits DEVICE_RESIDENT_BYTES; on the CPU as it is."""
        if (
            self.device.type == "cpu"
            or data.images.numel() * data.images.element_size() > DEVICE_RESIDENT_BYTES
        ):
            return data
        return data.to(self.device)

    def _net(self, x: torch.Tensor) -> nn.Module:
        """The module to call on ``x``: the model, or its torch.compile wrapper when asked."""
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
            # Inference-only graphs are static: the last batch is padded to the batch size, and
            # shapes made dynamic by other compiles of the same forward code broke frozen
            # channels-last graphs (a stride mismatch in the prepacked convolution).
            self._compiled = torch.compile(self.model, dynamic=False if self._freezes else None)
        return self._compiled

    def _call(self, net: nn.Module, x: torch.Tensor, first: bool) -> torch.Tensor:
        """``net(x)`` (with flip TTA in eval mode when asked). A failure in the first compiled
        call (no C++ compiler, an untraceable layer) becomes one TrainingError that says how to
        go on."""
        try:
            with fused_pooling(self._fused_now and not self.compile and self.device.type == "cpu"):
                return flip_tta(net, x) if self.tta and not self.model.training else net(x)
        except Exception as exc:
            if not first:
                raise
            detail = (str(exc).strip().splitlines() or [""])[0]
            raise TrainingError(
                f"torch.compile could not compile {type(self.model).__name__} "
                f"({type(exc).__name__}: {detail}); run without --compile (compile=False)"
            ) from exc

    @property
    def _freezes(self) -> bool:
        """Compiled graphs hold the weights as constants: only where nothing trains them."""
        return self.compile and self.optimizer is None

    def _freezing(self) -> contextlib.AbstractContextManager:
        """Inductor's freezing while an inference-only Trainer's compiled graphs are built."""
        if not self._freezes:
            return contextlib.nullcontext()
        try:
            from torch._inductor import config as inductor_config
        except ImportError:  # a PyTorch without inductor: plain compile
            return contextlib.nullcontext()
        return inductor_config.patch(freezing=True)

    def _weights_key(self) -> tuple:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return tuple((t.data_ptr(), t._version) for t in tensors)

    def _refreeze(self) -> None:
        """Drop frozen graphs whose weights have changed since (they would give stale outputs)."""
        if not self._freezes or self._frozen_key is None:
            return
        if self._weights_key() != self._frozen_key:
            torch.compiler.reset()
            self._compiled_modes.discard(False)

    def _compile_clock(self) -> float | None:
        """A start time when the next call is the first compiled one in the model's current mode
        (train or eval): that call compiles its graphs (in training, the backward's too)."""
        if self.compile and self.model.training not in self._compiled_modes:
            return time.perf_counter()
        return None

    def _compiled_since(self, start: float | None) -> None:
        if start is not None:
            self.compile_seconds += time.perf_counter() - start
            self._compiled_modes.add(self.model.training)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ----------------------------------------------------------------- training
    def fit(
        self,
        train: ArrayDataset,
        val: ArrayDataset | None = None,
        *,
        epochs: int = 20,
        batch_size: int = 32,
    ) -> History:
        """Train for up to ``epochs`` (counting epochs already done when resuming).

        Returns:
            The History (per-epoch loss, accuracy, val_loss, val_accuracy, lr, seconds).

        Raises:
            TrainingError: a non-finite loss (training stops at that step).
        """
        self._need_optimizer("fit")
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
        self.epochs = epochs
        self.steps_per_epoch = num_batches(len(train), batch_size)
        if self.fused_pool == "auto":
            self._fused_now = (epochs - self.epoch) * len(train) >= FUSED_POOL_MIN_IMAGES
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
        resident = self._resident(train)
        for epoch in range(epochs if self.stop_training else self.epoch, epochs):
            for cb in self.callbacks:
                cb.on_epoch_begin(epoch, logs)
            start = time.perf_counter()
            logs = self._train_epoch(resident, batch_size, epoch)
            self._check_finite_weights(epoch)
            if val is not None and len(val):
                val_logs = self.evaluate_loss(val)
                logs.update(val_loss=val_logs["loss"], val_accuracy=val_logs["accuracy"])
                if self.check_finite and not np.isfinite(val_logs["loss"]):
                    raise TrainingError(
                        f"validation loss became {val_logs['loss']} after epoch {epoch + 1} (global step "
                        f"{self.global_step}); training stopped and no checkpoint was written for it. "
                        "Try a lower --lr"
                    )
            logs["lr"] = self.optimizer.param_groups[0]["lr"]
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

    @contextlib.contextmanager
    def _pool_compile_clock(self) -> Any:
        """Adds the fused pooling kernels' compiling within the block to ``compile_seconds``."""
        before = fused_pool_compile_seconds()
        try:
            yield
        finally:
            self.compile_seconds += fused_pool_compile_seconds() - before

    def _train_epoch(self, data: ArrayDataset, batch_size: int, epoch: int) -> dict[str, float]:
        with self._pool_compile_clock():
            return self._train_batches(data, batch_size, epoch)

    def _train_batches(self, data: ArrayDataset, batch_size: int, epoch: int) -> dict[str, float]:
        self.model.train()
        # One generator per epoch, derived from the seed: the data order needs no saved state.
        order = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = 0
        seen = 0
        for step, (xb, yb) in enumerate(iterate_batches(data, batch_size, shuffle=True, generator=order)):
            x = self.prepare(xb)
            if self.augment is not None:
                x = self.augment(x)
            y = yb.to(self.device, non_blocking=True)
            clock = self._compile_clock()
            with self._autocast():
                logits = self._call(self._net(x), x, clock is not None)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
            loss_value = float(loss.detach())
            if self.check_finite and not np.isfinite(loss_value):
                raise TrainingError(
                    f"loss became {loss_value} at epoch {epoch + 1}, step {step + 1} (global step "
                    f"{self.global_step + 1}); training stopped and no checkpoint was written for it. "
                    "Try a lower --lr"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._compiled_since(clock)
            if self.max_grad_norm is not None:
                params = [p for group in self.optimizer.param_groups for p in group["params"]]
                norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm))
                if not np.isfinite(norm):
                    raise TrainingError(
                        f"gradient norm became {norm} at epoch {epoch + 1}, step {step + 1} (global step "
                        f"{self.global_step + 1}); training stopped before the update and no checkpoint "
                        "was written for it. Try a lower --lr"
                    )
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.global_step += 1
            n = len(y)
            loss_sum += loss_value * n
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += n
            batch_logs = {"loss": float(loss_sum) / seen, "accuracy": correct / seen}
            for cb in self.callbacks:
                cb.on_batch_end(step, batch_logs)
        return {"loss": float(loss_sum) / max(seen, 1), "accuracy": correct / max(seen, 1)}

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

    # ----------------------------------------------------------------- inference
    @torch.inference_mode()
    def logits(self, data: ArrayDataset | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Logits Tensor[N, K] on the CPU, in eval mode."""
        self.model.eval()
        images = data.images if isinstance(data, ArrayDataset) else data
        self._refreeze()
        with self._pool_compile_clock():
            outs = self._logit_batches(images, batch_size)
        if self._freezes:
            self._frozen_key = self._weights_key()
        return torch.cat(outs) if outs else torch.empty(0)

    def _logit_batches(self, images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        outs = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            n = len(batch)
            if self.compile and start > 0 and n < batch_size:
                # Padded to the batch size, the last batch reuses the compiled graph.
                batch = torch.cat([batch, batch.new_zeros((batch_size - n, *batch.shape[1:]))])
            x = self.prepare(batch)
            with self._autocast(), self._freezing():
                clock = self._compile_clock()
                out = self._call(self._net(x), x, clock is not None)
                self._compiled_since(clock)
            outs.append(out[:n].float().cpu())
        return outs

    def predict(self, data: ArrayDataset | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities Tensor[N, K] (softmax of the logits)."""
        return self.logits(data, batch_size).softmax(dim=1)

    def evaluate_loss(self, data: ArrayDataset, batch_size: int = 256) -> dict[str, float]:
        logits = self.logits(data, batch_size)
        loss = F.cross_entropy(logits, data.labels, label_smoothing=self.label_smoothing)
        return {"loss": float(loss), "accuracy": float((logits.argmax(1) == data.labels).float().mean())}

    def evaluate(self, data: ArrayDataset, batch_size: int = 256) -> dict[str, Any]:
        """Loss, accuracy, per-class precision / recall / F1 and the confusion matrix."""
        logits = self.logits(data, batch_size)
        k = logits.shape[1]
        report = classification_report(
            confusion_matrix(logits.argmax(1), data.labels, k), data.class_names or None
        )
        report["loss"] = float(F.cross_entropy(logits, data.labels))
        report["num_samples"] = len(data)
        return report

    # ----------------------------------------------------------------- resume
    def _need_optimizer(self, what: str) -> None:
        if self.optimizer is None:
            raise ValueError(
                f"this Trainer was built with optimizer=None (inference only) and cannot {what}; "
                "give it an optimizer"
            )

    def state(self) -> dict[str, Any]:
        self._need_optimizer("save a training state")
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "seed": self.seed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "callbacks": {f"{i}:{type(cb).__name__}": cb.state_dict() for i, cb in enumerate(self.callbacks)},
            "rng": rng_state(),
            "stop_training": self.stop_training,
            # CPU sums split over another number of threads round differently; resume reuses this.
            "num_threads": torch.get_num_threads(),
        }

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Everything exact resume needs, written atomically."""
        save_checkpoint(path, self.state())

    def load_checkpoint(self, path: str | os.PathLike[str], total_steps: int | None = None) -> None:
        """Restore model, optimizer moments, scheduler, counters, callback states and RNGs.

        The callbacks must be of the same types, in the same order, as when it was saved.
        """
        # On the CPU: torch.set_rng_state takes CPU tensors only; load_state_dict moves the rest.
        self.load_state(load_checkpoint(path, map_location="cpu"), total_steps, source=str(path))

    def load_state(
        self, body: dict[str, Any], total_steps: int | None = None, source: str = "checkpoint"
    ) -> None:
        """Restore from a verified checkpoint body (``load_checkpoint``), as ``load_checkpoint`` does."""
        missing = [key for key in STATE_KEYS if key not in body]
        if missing:
            raise CheckpointError(f"{source} is not a training checkpoint: it lacks {missing}")
        self.model.load_state_dict(body["model"])
        self.optimizer.load_state_dict(body["optimizer"])
        if body["scheduler"] is not None:
            if self.scheduler is None:
                if self.scheduler_factory is None or total_steps is None:
                    raise TrainingError(f"{source} has a scheduler state but this trainer has no scheduler")
                self.scheduler = self.scheduler_factory(self.optimizer, total_steps)
            self.scheduler.load_state_dict(body["scheduler"])
        saved = body["callbacks"]
        mine = {f"{i}:{type(cb).__name__}": cb for i, cb in enumerate(self.callbacks)}
        if list(saved) != list(mine):
            raise TrainingError(f"{source}: callbacks {list(saved)} differ from this run's {list(mine)}")
        for key, cb in mine.items():
            cb.load_state_dict(saved[key])
        self.epoch = int(body["epoch"])
        self.global_step = int(body["global_step"])
        self.seed = int(body["seed"])
        self._stopped_at_checkpoint = bool(body.get("stop_training", False))  # absent in older files
        set_rng_state(body["rng"])
