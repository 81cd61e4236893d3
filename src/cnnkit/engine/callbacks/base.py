"""The callback protocol: empty hooks that ``Trainer.fit`` calls at fixed points."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..trainer import Trainer


class Callback:
    """Override the hooks you need; ``self.trainer`` is set before training starts.

    ``logs`` holds the current metrics (``loss``, ``accuracy``, ``val_loss``, ...).
    """

    trainer: Trainer

    def set_trainer(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def monitored(self, monitor: str, logs: dict[str, Any]) -> float | None:
        """``logs[monitor]``; None after an epoch that skipped validation (fit's
        ``validation_freq``) when ``monitor`` is a ``val_`` metric.

        Raises:
            KeyError: ``monitor`` is not in the logs of an epoch that has it to give.
        """
        if monitor in logs:
            return float(logs[monitor])
        trainer = getattr(self, "trainer", None)
        if monitor.startswith("val_") and trainer is not None and not trainer.validated:
            return None
        raise KeyError(f"{type(self).__name__} monitors {monitor!r}, but the logs have {sorted(logs)}")

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        pass

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        pass

    def on_train_end(self, logs: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """What exact resume needs (JSON-able values and tensors only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def monitor_mode(monitor: str, mode: str) -> str:
    """'min' or 'max' for a metric name ('auto': accuracy-like metrics are maximised)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if any(k in monitor for k in ("acc", "iou", "map", "f1", "precision", "recall")) else "min"


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta
