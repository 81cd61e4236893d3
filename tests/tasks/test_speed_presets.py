"""The speed presets (`cnnkit train --preset fast`, `fast94`): every option reaches the trainer."""

from __future__ import annotations

import json

import pytest
import torch

from cnnkit.cli import train_classify
from cnnkit.tasks.classify.presets import PRESETS, TRAINER_EXTRAS


def test_the_cli_offers_every_preset():
    # cli/ names them without importing torch: the two lists must not drift apart.
    assert set(train_classify.PRESETS) == set(PRESETS) == set(TRAINER_EXTRAS)


@pytest.mark.parametrize("name", [name for name in PRESETS if name != "course"])
def test_preset_options_reach_the_trainer(name, tmp_path, capsys, monkeypatch):
    from cnnkit.cli.__main__ import main
    from cnnkit.runs import classify

    made, reported, printed = [], [], []
    import cnnkit.viz.report as report_module

    write_report = report_module.write_report

    def spy(*args, **kwargs):
        reported.append(kwargs.get("probs"))
        printed.append(capsys.readouterr().out)
        return write_report(*args, **kwargs)

    monkeypatch.setattr(report_module, "write_report", spy)
    make_trainer = classify.make_trainer
    monkeypatch.setattr(
        classify, "make_trainer", lambda *a, **k: made.append(make_trainer(*a, **k)) or made[-1]
    )
    out = tmp_path / "run"
    argv = ["train", "--preset", name, "--epochs", "1", "--limit-train", "400", "--limit-test", "64"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    # The test accuracy is printed as soon as it is known, before report.html is drawn.
    assert printed[0].startswith(
        f"test accuracy {json.loads((out / 'metrics.json').read_text())['test_accuracy']:.4f}"
    )
    preset, extras = PRESETS[name], TRAINER_EXTRAS[name]
    record = json.loads((out / "config.json").read_text())
    run = record["run"]
    assert run["preset"] == name and run["model"] == preset["model"]
    assert run["model_kwargs"] == preset["model_kwargs"]
    for key in ("batch_size", "optimizer", "lr", "weight_decay", "label_smoothing"):
        assert run[key] == preset[key], key
    assert run["val_fraction"] == preset.get("val_fraction", 0.2)
    held_out = round(400 * run["val_fraction"])
    assert record["data_sizes"]["train"] + record["data_sizes"]["val"] == 400
    assert abs(record["data_sizes"]["val"] - held_out) <= 1

    trainer = made[0]
    # The model: the preset's 3×3 convolutions, so many per stage (``depth``) of its widths, each
    # taking the previous one's channels, and a Dense head.
    weights = [p for p in trainer.model.parameters() if p.dim() in (2, 4)]
    kwargs = preset["model_kwargs"]
    depths = kwargs.get("depth", 1)
    depths = [depths] * len(kwargs["widths"]) if isinstance(depths, int) else depths
    convs = [w for w in weights if w.dim() == 4]
    assert [w.shape[0] for w in convs] == [w for w, d in zip(kwargs["widths"], depths) for _ in range(d)]
    assert [tuple(w.shape[1:]) for w in convs] == [(c, 3, 3) for c in [1, *[w.shape[0] for w in convs[:-1]]]]
    assert [w.shape[0] for w in weights if w.dim() == 2] == [preset["model_kwargs"]["hidden"], 10]
    # The first convolution: frozen patch-whitening pairs (a direction, then its negative), which
    # the training left as they were.
    assert run["whiten"] is preset.get("whiten", False)
    if run["whiten"]:
        # p = min(channels // 2, 9) pairs: a 3×3 grayscale patch has 9 directions.
        first = weights[0]
        pairs = min(first.shape[0] // 2, first[0].numel())
        assert not first.requires_grad and torch.equal(first[pairs : 2 * pairs], -first[:pairs])
    group = trainer.optimizer.param_groups[0]
    assert isinstance(trainer.optimizer, torch.optim.SGD) and group["weight_decay"] == preset["weight_decay"]
    assert trainer.task.label_smoothing == preset["label_smoothing"] and trainer.task.tta == extras["tta"]
    assert trainer.task.augment.max_shift == extras["max_shift"]
    assert trainer.task.augment.flip_p == extras["flip_p"]
    # One-cycle: it peaked at the preset's lr after pct_start of the steps, then annealed.
    assert isinstance(trainer.scheduler, torch.optim.lr_scheduler.OneCycleLR)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched, lrs = trainer.scheduler_factory(opt, 100), []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert (
        max(lrs) == pytest.approx(preset["lr"])
        and lrs.index(max(lrs)) == round(100 * extras["pct_start"]) - 1
    )
    # The speed settings: bf16 autocast and channels-last where the CPU has native bf16.
    from cnnkit.engine.device import pick_device
    from cnnkit.engine.perf import pick_perf_settings

    perf = pick_perf_settings(pick_device(), num_threads=1)
    assert (run["amp"], run["channels_last"]) == (perf.amp, perf.channels_last)
    capsys.readouterr()
    # `cnnkit evaluate` scores it as it trained, with the flip TTA config.json records, even once
    # the preset's definition has changed: the same accuracy as metrics.json.
    assert record["tta"] == extras["tta"]
    monkeypatch.setitem(TRAINER_EXTRAS, name, {**extras, "tta": not extras["tta"]})
    assert main(["evaluate", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert report["tta"] == extras["tta"] and report["num_samples"] == metrics["num_test_samples"]
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"])
    # report.html's confusion and mistakes, at the end of training and from `cnnkit report`, come
    # from the run's own predictions: the confusion matrix metrics.json recorded.
    assert main(["report", str(out)]) == 0
    from cnnkit.runs.evaluate import classify_data
    from cnnkit.runs.folder import read_run

    labels = classify_data(read_run(out))[1].labels
    assert len(reported) == 2
    for probs in reported:
        matrix = torch.bincount(labels * 10 + probs.argmax(1), minlength=100).view(10, 10)
        assert matrix.tolist() == metrics["confusion_matrix"]
    # A config.json whose tta this version does not know: one message naming it and the modes.
    capsys.readouterr()
    (out / "config.json").write_text(json.dumps({**record, "tta": "crop"}))
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err
    assert "config.json says tta='crop'" in err and "flip, shift" in err and "Traceback" not in err


def test_the_whiten_flag_sets_the_first_convolution_of_any_preset():
    from cnnkit.cli.__main__ import parse_command_line

    def whiten(*argv: str) -> bool:
        return train_classify.config_from_args(parse_command_line(["train", *argv]), "classify").whiten

    assert whiten("--preset", "fast") is True and whiten("--preset", "fast", "--no-whiten") is False
    assert whiten() is False and whiten("--whiten") is True  # the course recipe: off unless asked


def test_a_settings_file_stands_over_the_preset_as_flags_do(tmp_path):
    from cnnkit.cli.__main__ import parse_command_line

    def config(*argv: str):
        return train_classify.config_from_args(parse_command_line(["train", *argv]), "classify")

    preset = PRESETS["fast94"]
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"epochs": 2, "weight_decay": 0.001}))
    run = config("--config", str(mine), "--preset", "fast94")
    assert (run.epochs, run.weight_decay, run.patience) == (2, 0.001, 2)  # the whole one-cycle run
    assert (run.lr, run.model_kwargs) == (preset["lr"], preset["model_kwargs"])  # the rest: the preset's
    assert config("--config", str(mine), "--preset", "fast94", "--epochs", "5").epochs == 5
    # A run's saved config.json lists every setting it ran with: the preset given with it sets its own.
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps({"run": {"epochs": 20, "weight_decay": 0.0, "lr": 0.001}}))
    run = config("--config", str(saved), "--preset", "fast94")
    assert (run.epochs, run.weight_decay, run.lr) == (preset["epochs"], preset["weight_decay"], preset["lr"])


def test_a_settings_file_is_read_once(tmp_path, monkeypatch):
    """The file's settings, the names it gives (which the preset and --precision leave alone) and
    whether it is a run's record all come from one read."""
    from pathlib import Path

    from cnnkit.cli.__main__ import parse_command_line

    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"epochs": 2, "amp": None, "channels_last": False}))
    reads, read_text = [], Path.read_text
    monkeypatch.setattr(
        Path, "read_text", lambda self, *a, **k: reads.append(self) or read_text(self, *a, **k)
    )
    args = parse_command_line(["train", "--config", str(mine), "--preset", "fast94"])
    run = train_classify.config_from_args(args, "classify")
    assert reads.count(mine) == 1
    assert (run.epochs, run.amp, run.channels_last) == (2, None, False)  # the file's, over the preset's
