"""A progress bar with live loss and accuracy: tqdm in terminals and notebooks, lines in logs."""

from __future__ import annotations

import sys
import time
from typing import Any

from .base import Callback


def _fmt(logs: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "  ".join(f"{k} {logs[k]:.4f}" for k in keys if k in logs)


def _in_notebook() -> bool:
    """Whether this code runs in a notebook's kernel (Jupyter, VS Code, Colab): an IPython shell
    that has a kernel. A process that merely imported ipykernel (a test runner that ran
    notebooks before) is not one."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return False
    try:
        shell = get_ipython()
    except Exception:  # a broken IPython install: no notebook
        return False
    return getattr(shell, "kernel", None) is not None


class ProgressBar(Callback):
    display_only = True  # shows progress only: left out of checkpoints (display is not state)

    """Shows one bar per epoch on a terminal or notebook; one line per epoch otherwise.

    Args:
        stream: where to write (stderr by default).
        bar: True forces a bar, False forces plain lines, None decides from ``stream.isatty()``
            (tqdm.auto picks the notebook widget inside Jupyter).
        keys: the log entries shown (default: the task's ``shown``).
    """

    def __init__(
        self, stream: Any = None, bar: bool | None = None, keys: tuple[str, ...] | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.keys = keys
        self.bar = bar
        self._pbar = None
        self._t0 = 0.0

    def _use_bar(self) -> bool:
        if self.bar is not None:
            return self.bar
        if _in_notebook():
            return True
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def _keys(self) -> tuple[str, ...]:
        return self.keys or self.trainer.task.shown

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        self._t0 = time.perf_counter()
        if self._use_bar():
            from tqdm.auto import tqdm

            self._pbar = tqdm(
                total=self.trainer.steps_per_epoch,
                desc=f"epoch {epoch + 1}/{self.trainer.epochs}",
                file=self.stream,
                leave=True,
                dynamic_ncols=True,
                unit="batch",
            )

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        if self._pbar is not None:
            self._pbar.update(1)
            if step % 20 == 0:
                self._pbar.set_postfix_str(_fmt(logs, self._keys()), refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self._pbar is not None:
            self._pbar.set_postfix_str(_fmt(logs, self._keys()))
            self._pbar.close()
            self._pbar = None
        else:
            seconds = time.perf_counter() - self._t0
            print(
                f"epoch {epoch + 1}/{self.trainer.epochs}  {_fmt(logs, self._keys())}  ({seconds:.1f} s)",
                file=self.stream,
                flush=True,
            )
