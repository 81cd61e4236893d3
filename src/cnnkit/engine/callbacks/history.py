"""Per-epoch metrics kept in memory and saved as CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from ...io.atomic import atomic_write_text
from .base import Callback


class History(Callback):
    """Collects ``logs`` of every epoch (loss, accuracy, val_loss, val_accuracy, lr, seconds).

    Attributes:
        epochs: list of per-epoch dicts, with an ``epoch`` key counted from 1.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self.epochs.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})

    @property
    def history(self) -> dict[str, list[float]]:
        """Keras' ``History.history``: each logged key (``loss``, ``val_loss``, ...) -> per-epoch list."""
        keys = dict.fromkeys(k for row in self.epochs for k in row if k != "epoch")
        return {k: self.series(k) for k in keys}

    @property
    def epoch(self) -> list[int]:
        """Keras' ``History.epoch``: the epochs run, counted from 0."""
        return [int(row["epoch"]) - 1 for row in self.epochs]

    def series(self, key: str) -> list[float]:
        return [row[key] for row in self.epochs if key in row]

    def to_csv(self) -> str:
        keys: list[str] = []
        for row in self.epochs:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.epochs)
        return buf.getvalue()

    def save(self, folder: str | os.PathLike[str]) -> None:
        folder = Path(folder)
        atomic_write_text(folder / "history.csv", self.to_csv())
        atomic_write_text(folder / "history.json", json.dumps(self.epochs, indent=2))

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": json.dumps(self.epochs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs = json.loads(state["epochs"])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        """Read a saved ``history.json``."""
        history = cls()
        history.epochs = json.loads(Path(path).read_text(encoding="utf-8"))
        return history
