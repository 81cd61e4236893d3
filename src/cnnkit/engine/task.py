"""The task protocol: what one kind of learning tells the engine's loop.

A task knows its data and its loss; the ``Trainer`` owns everything else once (seeding and the
per-epoch order, precision, clipping, the non-finite guard, schedules, callbacks, checkpoints,
exact resume). Every task of cnnkit (classification, fine-tuning, localization, detection,
semantic segmentation, Mask R-CNN) is a subclass that fills these hooks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from .distributed import World, shard_batch

if TYPE_CHECKING:
    from .trainer import Trainer

# A step's parts: a float is averaged over the epoch weighted by the batch's ``n``; a
# (numerator, denominator) pair is summed and divided at the end (e.g. correct / counted pixels).
StepOutput = dict[str, Any]


class Task(ABC):
    """Override the hooks a task needs; the defaults fit datasets with ``len``.

    Attributes:
        name: the task's name as run folders record it (``'classify'``, ``'detect'``, ...).
        monitor: the validation metric that early stopping and the best checkpoint watch.
        shown: epoch-log keys a progress display shows.
    """

    name: str = "task"
    monitor: str = "val_loss"
    shown: tuple[str, ...] = ("loss", "val_loss")

    def num_samples(self, data: Any) -> int:
        """How many training samples ``data`` holds (steps per epoch follow from it)."""
        return len(data)

    def prepare_fit(self, trainer: Trainer, data: Any) -> Any:
        """Called once per ``fit`` before the first epoch; may return ``data`` moved or cached."""
        return data

    @abstractmethod
    def batches(self, trainer: Trainer, data: Any, batch_size: int, generator: torch.Generator) -> Iterable:
        """The epoch's training batches, in an order drawn from ``generator`` (seeded per epoch by
        the engine; random augmentation draws from it too, so resume needs no saved data state)."""

    @abstractmethod
    def train_step(self, trainer: Trainer, batch: Any) -> StepOutput:
        """One batch's forward pass under the engine's autocast.

        Returns:
            ``{"loss": Tensor[] to minimise, "n": samples in the batch, **parts}``: parts are
            floats (averaged over the epoch, weighted by ``n``) or (numerator, denominator) pairs.
            A loss that is a mean over something other than samples (labelled pixels) may say how
            many in ``"loss_units"``: data-parallel ranks then weight their losses by their share
            of the global batch's units, not of its samples.
        """

    def shard(self, batch: Any, world: World) -> tuple[Any, int, int]:
        """This rank's share of a global training batch under data-parallel training.

        The default slices every tensor and list of the batch along its first dimension (one
        entry per sample); a task whose batch holds other rows (boxes of all images) overrides it.

        Returns:
            (the local batch, its samples, the global batch's samples).
        """
        return shard_batch(batch, world)

    def validate(self, trainer: Trainer, data: Any) -> dict[str, float]:
        """Validation metrics (the engine logs them with a ``val_`` prefix)."""
        return {}

    def evaluate(self, trainer: Trainer, data: Any) -> dict[str, Any]:
        """The full test report of the task (what ``metrics.json`` and ``cnnkit evaluate`` show)."""
        return self.validate(trainer, data)
