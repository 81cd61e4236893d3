"""Classification as an engine task: images in, one class out (the course's task)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data.arrays import ArrayDataset, image_tensor, iterate_batches
from ...engine.callbacks import Callback, History
from ...engine.distributed import gather_rows, shard_range
from ...engine.task import StepOutput, Task
from ...engine.trainer import Trainer
from ...errors import DataError
from .augment import tta_function
from .cascade import CALIBRATION_IMAGES, INT8_BATCH, Int8Cascade, int8_cascade
from .metrics import classification_report, confusion_matrix

# A training set up to this size goes to an accelerator once per fit: its batches are then
# indexed there and never cross the bus again (Fashion-MNIST's 60,000 images are 47 MB).
DEVICE_RESIDENT_BYTES = 1 << 30


class ClassifyTask(Task):
    """Cross-entropy on logits Tensor[N, K] for uint8 images Tensor[N, C, H, W] (``ArrayDataset``).

    Args:
        label_smoothing: cross-entropy label smoothing in training.
        normalize: (mean, std) per channel applied after scaling uint8 pixels to [0, 1].
        augment: optional function applied to each float training batch on the device.
        tta: test-time augmentation in inference: ``True`` or ``"flip"``, the mean logits of the
            image and its mirror; ``"shift"``, of ten views (those two, each also shifted by one
            pixel in four directions). The validation during training takes the flip views only
            (a tenth of the work of ``"shift"``, every epoch); test scores, ``evaluate`` and
            ``logits`` take all.
    """

    name = "classify"
    monitor = "val_loss"
    shown = ("loss", "accuracy", "val_loss", "val_accuracy")

    def __init__(
        self,
        *,
        label_smoothing: float = 0.0,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        tta: bool | str = False,
    ) -> None:
        tta_function(tta)  # an unknown mode fails here, not at the first evaluation
        self.label_smoothing = label_smoothing
        self.normalize = normalize
        self.augment = augment
        self.tta = tta

    def prepare(self, trainer: Trainer, images: torch.Tensor) -> torch.Tensor:
        """uint8 Tensor[N, C, H, W] -> float on the device, scaled to [0, 1] and normalised.

        The memory format changes on the uint8 batch (a quarter of the float bytes); the scaling
        and normalisation then run in place on the one float copy, keeping that format.
        """
        device = trainer.device
        if device.type == "cuda" and images.device.type == "cpu":
            images = images.pin_memory()  # so that the copy below runs while the GPU computes
        x = images.to(device, non_blocking=True)
        if trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        mean = std = None
        if self.normalize is not None:
            mean = torch.as_tensor(self.normalize[0], device=x.device).view(1, -1, 1, 1)
            std = torch.as_tensor(self.normalize[1], device=x.device).view(1, -1, 1, 1)
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)  # a new tensor: the rest may run in place
            return x if mean is None else x.sub_(mean).div_(std)
        x = x.float()  # float input may be the caller's own tensor: no in-place changes
        return x if mean is None else (x - mean) / std

    def prepare_fit(self, trainer: Trainer, data: ArrayDataset) -> ArrayDataset:
        """``data`` on the accelerator when it fits DEVICE_RESIDENT_BYTES; on the CPU as it is."""
        check_labels_fit(trainer.model, data)
        if (
            trainer.device.type == "cpu"
            or data.images.numel() * data.images.element_size() > DEVICE_RESIDENT_BYTES
        ):
            return data
        return data.to(trainer.device)

    def batches(
        self, trainer: Trainer, data: ArrayDataset, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for xb, yb in iterate_batches(data, batch_size, shuffle=True, generator=generator):
            x = self.prepare(trainer, xb)
            if self.augment is not None:
                x = self.augment(x)
            yield x, yb.to(trainer.device, non_blocking=True)

    def train_step(self, trainer: Trainer, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        logits = trainer.forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        correct = int((logits.detach().argmax(1) == y).sum())
        return {"loss": loss, "n": len(y), "accuracy": (correct, len(y))}

    @torch.inference_mode()
    def logits(
        self,
        trainer: Trainer,
        data: ArrayDataset | torch.Tensor,
        batch_size: int = 256,
        tta: bool | str | None = None,
    ) -> torch.Tensor:
        """Logits Tensor[N, K] on the CPU, in eval mode (with the task's TTA, or ``tta``'s if given).

        Under data-parallel training each rank computes its ``shard_range`` of the images and all
        ranks receive all N rows (every rank must call it): each image is counted once.
        """
        trainer.model.eval()
        images = data.images if isinstance(data, ArrayDataset) else data
        fn = tta_function(self.tta if tta is None else tta)
        world = trainer.world
        if world.active:
            start, stop = shard_range(len(images), world.rank, world.size)
            return gather_rows(self._logits(trainer, images[start:stop], batch_size, fn), len(images))
        return self._logits(trainer, images, batch_size, fn)

    def _logits(self, trainer: Trainer, images: torch.Tensor, batch_size: int, fn: Any) -> torch.Tensor:
        cascade = getattr(trainer, "cascade", None)
        if cascade is not None and not cascade.fits(trainer.model):
            trainer.cascade = cascade = None  # trained since: its int8 copy is of older weights
        if cascade is not None and len(images):
            return self._cascade_logits(trainer, cascade, images, batch_size, fn)
        return self._float_logits(trainer, images, batch_size, fn)

    def _cascade_logits(
        self, trainer: Trainer, cascade: Int8Cascade, images: torch.Tensor, batch_size: int, fn: Any
    ) -> torch.Tensor:
        """The int8 copy's logits, with the images it is unsure of scored again in float."""
        outs, unsure = [], []
        for start in range(0, len(images), INT8_BATCH):
            trainer.poll_threads()
            x = self.prepare(trainer, images[start : start + INT8_BATCH])
            out = (fn(cascade.net, x) if fn is not None else cascade.net(x)).float().cpu()
            unsure.append(cascade.uncertain(out).nonzero().squeeze(1) + start)
            outs.append(out)
        logits = torch.cat(outs)
        again = torch.cat(unsure)
        if len(again):
            logits[again] = self._rescore(trainer, images, again, batch_size, fn)
        cascade.images += len(images)
        cascade.rescored += len(again)
        return logits

    def _rescore(
        self, trainer: Trainer, images: torch.Tensor, again: torch.Tensor, batch_size: int, fn: Any
    ) -> torch.Tensor:
        """Float logits of ``images[again]``, each image computed in a batch of the size the float
        pass gives it (``batch_size``, the last one smaller), the rest of the batch filled with
        other images. Kernels pick their blocking by batch size, so each image's logits are then
        those of the float pass bit for bit, and so is a near tie between two classes."""
        n = len(images)
        tail = 0 if trainer.forward.pads else n % batch_size  # the float pass's last, smaller batch
        groups = [(again < n - tail, batch_size)] + ([(again >= n - tail, tail)] if tail else [])
        out: torch.Tensor | None = None
        for in_group, size in groups:
            rows = in_group.nonzero().squeeze(1)
            for start in range(0, len(rows), size):
                chunk = rows[start : start + size]
                batch = images[again[chunk]]
                if len(chunk) < size:
                    batch = torch.cat([batch, images[: size - len(chunk)]])
                logits = self._float_logits(trainer, batch, size, fn)[: len(chunk)]
                if out is None:
                    out = logits.new_empty(len(again), logits.shape[1])
                out[chunk] = logits
        assert out is not None  # again is not empty
        return out

    def _float_logits(self, trainer: Trainer, images: torch.Tensor, batch_size: int, fn: Any) -> torch.Tensor:
        outs = []
        with trainer.forward.inference(len(images)):
            for start in range(0, len(images), batch_size):
                trainer.poll_threads()  # a long inference follows the free cores too
                batch = images[start : start + batch_size]
                n = len(batch)
                if trainer.forward.pads and start > 0 and n < batch_size:
                    # Padded to the batch size, the last batch reuses the frozen graph.
                    batch = torch.cat([batch, batch.new_zeros((batch_size - n, *batch.shape[1:]))])
                x = self.prepare(trainer, batch)
                with trainer.autocast():
                    out = trainer.forward(x, fn)
                outs.append(out[:n].float().cpu())
        if not outs:  # an empty share still has the logits' shape, for gather_rows
            return torch.empty(0, getattr(trainer.model, "num_classes", 0) or 0)
        return torch.cat(outs)

    def validate(self, trainer: Trainer, data: ArrayDataset) -> dict[str, float]:
        check_labels_fit(trainer.model, data)
        logits = self.logits(trainer, data, tta="flip" if self.tta else False)
        loss = F.cross_entropy(logits, data.labels, label_smoothing=self.label_smoothing)
        return {"loss": float(loss), "accuracy": float((logits.argmax(1) == data.labels).float().mean())}

    def evaluate(self, trainer: Trainer, data: ArrayDataset) -> dict[str, Any]:
        """Loss, accuracy, per-class precision / recall / F1 and the confusion matrix."""
        return self.scores(self.logits(trainer, data), data)

    @staticmethod
    def scores(logits: torch.Tensor, data: ArrayDataset) -> dict[str, Any]:
        """:meth:`evaluate`'s report from logits Tensor[N, K] already computed for ``data``."""
        k = logits.shape[1]
        report = classification_report(
            confusion_matrix(logits.argmax(1), data.labels, k), data.class_names or None
        )
        report["loss"] = float(F.cross_entropy(logits, data.labels))
        report["num_samples"] = len(data)
        return report


def check_labels_fit(model: nn.Module, data: ArrayDataset) -> None:
    """Refuse labels the model has no output for, naming both, before a step fails deep inside."""
    outputs = getattr(model, "num_classes", None)
    if not isinstance(outputs, int) or outputs < 1 or not len(data.labels):
        # A model that does not say, or a headless one (num_classes=0) given a head of its own:
        # cross-entropy still refuses a label past its outputs.
        return
    top = int(data.labels.max())
    if top >= outputs:
        raise DataError(
            f"{data.name}: label {top}, but the model has {outputs} outputs (classes 0..{outputs - 1}); "
            f"give labels 0..{outputs - 1} or build the model with num_classes={top + 1}"
        )


class ClassifyTrainer(Trainer):
    """The engine with the classification task (Keras' habit: build, then ``fit(train, val)``).

    Takes the engine's options (``cnnkit.engine.Trainer``) and ClassifyTask's (``label_smoothing``,
    ``normalize``, ``augment``, ``tta``); adds ``logits``, ``predict`` and ``evaluate_loss``.
    """

    task: ClassifyTask

    def __init__(
        self,
        model: nn.Module,
        task: ClassifyTask | None = None,
        *,
        label_smoothing: float = 0.0,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        tta: bool | str = False,
        **engine_options: Any,
    ) -> None:
        if task is None:
            task = ClassifyTask(
                label_smoothing=label_smoothing, normalize=normalize, augment=augment, tta=tta
            )
        super().__init__(model, task, **engine_options)
        self.cascade: Int8Cascade | None = None

    def fit(  # type: ignore[override]
        self,
        x: ArrayDataset | np.ndarray | torch.Tensor,
        y: ArrayDataset | np.ndarray | torch.Tensor | None = None,
        *,
        epochs: int = 20,
        batch_size: int = 32,
        verbose: int = 1,
        callbacks: Sequence[Callback] = (),
        validation_data: ArrayDataset | tuple[Any, Any] | None = None,
        validation_split: float = 0.0,
        validation_freq: int = 1,
    ) -> History:
        """Keras' ``fit``: ``fit(train, val)`` on ArrayDatasets, or ``fit(x, y, ...)`` on arrays.

        Args:
            x: an ArrayDataset, or images as NumPy arrays or tensors (see ``ArrayDataset.from_arrays``).
            y: the labels of array images; the validation ArrayDataset after a training one.
            validation_data: an ArrayDataset or an ``(x_val, y_val)`` pair.
            validation_split: hold out the last share of ``x`` for validation, as Keras does.
            validation_freq: validate after every so many epochs, as Keras does, and after the
                last one (``cnnkit.engine.Trainer.fit``).
            epochs, batch_size, verbose, callbacks: as ``cnnkit.engine.Trainer.fit``.

        Returns:
            History: ``history.history`` is Keras' dict of per-epoch lists.
        """
        if isinstance(x, ArrayDataset):
            if y is not None and not isinstance(y, ArrayDataset):
                raise ValueError("fit(train, val): val must be an ArrayDataset (the labels are in train)")
            train, val = x, y
        elif y is None:
            raise ValueError("fit(x, y): give the labels y of the images x (or an ArrayDataset as x)")
        else:
            train, val = ArrayDataset.from_arrays(x, y), None
        if validation_data is not None:
            if val is not None or validation_split:
                raise ValueError("give one of a validation set, validation_data or validation_split")
            val = validation_data
            if not isinstance(val, ArrayDataset):
                val = ArrayDataset.from_arrays(*val, name="validation_data")
        elif validation_split:
            if val is not None:
                raise ValueError("give one of a validation set or validation_split")
            train, val = train.split_last(validation_split)
        return super().fit(
            train,
            val,
            epochs=epochs,
            batch_size=batch_size,
            verbose=verbose,
            callbacks=callbacks,
            validation_freq=validation_freq,
        )

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return self.task.prepare(self, images)

    def logits(self, data: ArrayDataset | np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Logits Tensor[N, K] of an ArrayDataset or of images as ``fit(x, y)`` takes them."""
        images = data if isinstance(data, ArrayDataset) else image_tensor(data)
        return self.task.logits(self, images, batch_size)

    def predict(self, data: ArrayDataset | np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities Tensor[N, K] (softmax of the logits), as Keras' ``predict``: of an
        ArrayDataset, or of NumPy arrays or tensors of images (``val_scaled[0:1]``)."""
        return self.logits(data, batch_size).softmax(dim=1)

    def evaluate(  # type: ignore[override]
        self, x: ArrayDataset | np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor | None = None
    ) -> dict[str, Any]:
        """The test report (accuracy, loss, per-class scores) of an ArrayDataset, or of arrays as
        Keras' ``evaluate(val_scaled, val_target)`` takes them."""
        if not isinstance(x, ArrayDataset):
            if y is None:
                raise ValueError("evaluate(x, y): give the labels y of the images x (or an ArrayDataset)")
            x = ArrayDataset.from_arrays(x, y)
        return super().evaluate(x)

    def use_int8_cascade(
        self, calibration: ArrayDataset | torch.Tensor, *, cache: bool = True
    ) -> Int8Cascade:
        """From now on, inference scores with an int8 copy of the model first and scores again
        in float the images whose class int8 could change (``cascade``): the float
        predictions, about twice as fast on a CPU. The logits of the other images are the int8
        ones, so a loss moves slightly (0.2480 against 0.2475 on the course CNN). Training
        the model further ends it: later inference is float until this is called again.

        Args:
            calibration: uint8 training images Tensor[N, C, H, W] (or their ArrayDataset), never
                the test set; a seeded sample of ``cascade.CALIBRATION_IMAGES`` of them is used.
            cache: keep the quantized copy in ``~/.cache/cnnkit/int8`` for the next process.

        Returns:
            The Int8Cascade now in use (its ``summary()`` counts the images scored again).

        Raises:
            ValueError: the model runs on another device than the CPU, or has a layer without
                an int8 kernel (named).
            RuntimeError: this PyTorch has no quantized engine.
        """
        if self.device.type != "cpu":
            raise ValueError(f"the int8 cascade runs on the CPU, not {self.device}")
        if isinstance(calibration, ArrayDataset):
            images = calibration.take(min(CALIBRATION_IMAGES, len(calibration)), seed=0).images
        else:
            images = image_tensor(calibration)
            if len(images) > CALIBRATION_IMAGES:
                pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
                images = images[pick[:CALIBRATION_IMAGES]]
        self.model.eval()
        x = self.prepare(images)

        def reference(batch: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), self.autocast():
                return self.model(batch)

        self.cascade = None
        self.cascade = int8_cascade(self.model, x, reference, precision=str(self.amp or "fp32"), cache=cache)
        return self.cascade

    def evaluate_loss(self, data: ArrayDataset) -> dict[str, float]:
        return self.task.validate(self, data)
