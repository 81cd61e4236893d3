"""An exponential moving average of a model's weights (Keras' ``use_ema``, timm's model EMA).

After every optimizer step the average moves towards the new weights:
``average = d × average + (1 − d) × weights`` (the first step copies them), BatchNorm's running
statistics included. As in TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``, the
decay ``d`` warms up: at the n-th update after the first it is ``min(decay, (1 + n) / (10 + n))``,
so a short run is not an average dominated by its first, untrained steps.

The Trainer validates, keeps and saves the averaged weights and trains on its own: between an
epoch's last step and the next epoch's first, the model holds the average and the training
weights wait here. The averaging itself is ``torch.optim.swa_utils.AveragedModel``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..errors import TrainingError


class WeightAverage:
    """The moving average of ``model``'s weights and buffers, swapped in for evaluation.

    Args:
        decay: how much of the average each step keeps, in (0, 1): the average spans about
            ``1 / (1 − decay)`` steps (0.999: the last thousand).
    """

    def __init__(self, decay: float) -> None:
        if not (isinstance(decay, float | int) and 0.0 < decay < 1.0):
            raise ValueError(f"the weight average's decay must be between 0 and 1, got {decay!r}")
        self.decay = float(decay)
        self.average: AveragedModel | None = None  # made at the first step (lazy layers are sized)
        self._training: dict[str, torch.Tensor] | None = None  # the training weights while swapped out

    def current_decay(self, n: int) -> float:
        """The decay of the n-th update after the first (the warm-up, then ``decay``)."""
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def _lerp(self, averages: list[torch.Tensor], weights: list[torch.Tensor], n: torch.Tensor) -> None:
        if averages[0].is_floating_point():  # counters are copied in update()
            torch._foreach_lerp_(averages, weights, 1.0 - self.current_decay(int(n)))

    def _averaged_model(self, model: nn.Module) -> AveragedModel:
        return AveragedModel(model, multi_avg_fn=self._lerp, use_buffers=True)

    @property
    def steps(self) -> int:
        """Optimizer steps averaged so far."""
        return 0 if self.average is None else int(self.average.n_averaged)

    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average (after an optimizer step)."""
        if self._training is not None:
            raise RuntimeError("the model holds the averaged weights: call swap_out() before training")
        if self.average is None:
            self.average = self._averaged_model(model)
        self.average.update_parameters(model)
        # Counters (BatchNorm's num_batches_tracked) are not averaged: they are the model's.
        for mine, theirs in zip(self.average.module.buffers(), model.buffers(), strict=True):
            if not mine.is_floating_point():
                mine.copy_(theirs)

    @torch.no_grad()
    def swap_in(self, model: nn.Module) -> None:
        """Put the averaged weights into ``model``, keeping its training weights aside."""
        if self.average is None or self._training is not None:
            return
        self._training = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.average.module.state_dict())

    @torch.no_grad()
    def swap_out(self, model: nn.Module) -> None:
        """Put the training weights back into ``model`` (before the next training step)."""
        if self._training is not None:
            model.load_state_dict(self._training)
            self._training = None

    def training_weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The weights training goes on from: the ones set aside, or ``model``'s own."""
        return self._training if self._training is not None else model.state_dict()

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "steps": self.steps,
            "average": None if self.average is None else self.average.module.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore the average saved with ``state_dict``; ``model`` holds the training weights."""
        self._training = None
        if state.get("average") is None:
            self.average = None
            return
        self.average = self._averaged_model(model)
        self.average.module.load_state_dict(state["average"])
        self.average.n_averaged.fill_(int(state["steps"]))


def load_weight_average(
    average: WeightAverage | None, saved: dict[str, Any] | None, model: nn.Module, source: str
) -> None:
    """Restore a checkpoint's average (``saved``, None if it has none) into a Trainer's, ``model``
    holding the checkpoint's training weights; a checkpoint and a Trainer that differ in keeping
    one cannot go on together (TrainingError naming ``source``)."""
    if (saved is None) != (average is None):
        raise TrainingError(
            f"{source} was trained {'without' if saved is None else 'with'} a weight average "
            f"(--ema) and this run {'has one' if saved is None else 'has none'}: resume it "
            "with the run's own settings"
        )
    if average is not None:
        # The file was written at an epoch's end, when the model held the average.
        average.load_state_dict(saved, model)
        average.swap_in(model)
