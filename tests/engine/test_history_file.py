"""HistoryFile: history.json is on disk after every epoch, while training goes on."""

from __future__ import annotations

import json

import torch
from torch import nn

from cnnkit.data import ArrayDataset
from cnnkit.engine.callbacks import Callback, HistoryFile
from cnnkit.tasks.classify.task import ClassifyTrainer


class ReadsTheFile(Callback):
    """Reads history.json at the end of each epoch, after HistoryFile, as a watcher would."""

    def __init__(self, path):
        self.path = path
        self.seen: list[list[dict]] = []

    def on_epoch_end(self, epoch, logs):
        self.seen.append(json.loads(self.path.read_text()))


def test_history_json_grows_epoch_by_epoch(fashion_small, tmp_path):
    train, test = fashion_small
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    data = ArrayDataset(train.images[:256], train.labels[:256], train.class_names)
    watcher = ReadsTheFile(tmp_path / "history.json")
    trainer = ClassifyTrainer(model, device="cpu", callbacks=[HistoryFile(tmp_path), watcher])
    history = trainer.fit(data, test.subset(slice(0, 64)), epochs=3, batch_size=64)
    assert [[row["epoch"] for row in rows] for rows in watcher.seen] == [[1], [1, 2], [1, 2, 3]]
    assert watcher.seen[-1] == json.loads(json.dumps(history.epochs))
    header = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "epoch" and {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(header)
    assert trainer.state()["callbacks"].keys() == {"0:History", "1:ReadsTheFile"}  # display only: no state
