"""Localization and detection runs: the one run-folder format, exact resume after Ctrl-C, the
non-finite guard, and every command on the run (also on run folders written before the change).

The runs are tiny (32-pixel FashionScenes, 48 training scenes, 6 steps per epoch, 3 epochs) and
run as `python -m cnnkit.cli` subprocesses with one thread each, as a user would start them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from cnnkit.cli.__main__ import main, parse_command_line
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.io.weights import load_state_dict_file
from cnnkit.runs.config import SceneConfig

TASKS = ("localize", "detect")
EPOCHS = 3
STEPS = 6  # 48 training scenes in batches of 8
TINY = ["--canvas", "32", "--item-sizes", "12,24", "--train-images", "48", "--limit-test", "4",
        "--epochs", str(EPOCHS), "--batch-size", "8", "--head-width", "16", "--no-progress"]  # fmt: skip
ARGS = {task: ["train", task, *TINY] for task in TASKS}
ARGS["detect"] += ["--anchors", "2", "--max-objects", "2"]
# What every run folder holds (a classification run's files), and what these tasks add.
RUN_FILES = {"config.json", "best.safetensors", "last.ckpt", "history.csv", "history.json", "curves.png",
             "metrics.json", "report.html"}  # fmt: skip
SCORE = {"localize": "mean_iou", "detect": "map_50"}


# The run to interrupt, as `python -m cnnkit.cli` but waiting at the start of epoch 2 until the
# test's SIGINT (a KeyboardInterrupt, as Ctrl-C raises) ends the wait: a tiny epoch takes well
# under a second, so without the wait the run could end before the signal reaches it.
WAIT_IN_EPOCH_2 = """
import runpy, sys, time
from cnnkit.engine.trainer import Trainer
train_epoch = Trainer._train_epoch
def waiting(self, data, batch_size, epoch):
    if epoch == 1:
        time.sleep(300)
    return train_epoch(self, data, batch_size, epoch)
Trainer._train_epoch = waiting
sys.argv[0] = "cnnkit"
runpy.run_module("cnnkit.cli", run_name="__main__")
"""


def _start(
    argv: list[str], env: dict[str, str], entry: tuple[str, str] = ("-m", "cnnkit.cli")
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *entry, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A shell runs background jobs with SIGINT ignored, and a child inherits that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _interrupt_after_epoch_1(proc: subprocess.Popen) -> tuple[int, str]:
    """SIGINT once the child printed the end of epoch 1 (one line per epoch with --no-progress)."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("epoch 1:"):
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=300)
    return proc.returncode, "".join(seen) + rest


@pytest.fixture(scope="module")
def scene_runs(tmp_path_factory):
    """Per task: an uninterrupted run, and one interrupted after epoch 1 then resumed.

    Returns ``{task: {"reference": Path, "resumed": Path, "interrupted": (exit code, stderr,
    epoch in last.ckpt, files of the folder), "resume_output": str}}``.
    """
    root = tmp_path_factory.mktemp("scene_runs")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CNNKIT_CACHE": str(root / "cache")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2] / "src"), env.get("PYTHONPATH", "")])
    from cnnkit.cli.train_scenes import config_from_args
    from cnnkit.runs.scenes import load_data

    # Data first, so that the runs started together do not all generate it.
    for task in TASKS:
        args = parse_command_line([*ARGS[task], "--out", "unused"])
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CNNKIT_CACHE", env["CNNKIT_CACHE"])
            load_data(config_from_args(args, task))
    runs = {task: {"reference": root / f"{task}-ref", "resumed": root / f"{task}-int"} for task in TASKS}
    started = {
        (task, kind): _start([*ARGS[task], "--out", str(paths[kind])], env, entry)
        for task, paths in runs.items()
        for kind, entry in (("reference", ("-m", "cnnkit.cli")), ("resumed", ("-c", WAIT_IN_EPOCH_2)))
    }
    # One reader per interrupted run, so that each gets its SIGINT as soon as its epoch 1 ends.
    with ThreadPoolExecutor(len(TASKS)) as pool:
        interrupted = {t: pool.submit(_interrupt_after_epoch_1, started[t, "resumed"]) for t in TASKS}
        for task in TASKS:
            code, err = interrupted[task].result()
            epoch = load_checkpoint(runs[task]["resumed"] / "last.ckpt")["epoch"]
            files = sorted(p.name for p in runs[task]["resumed"].iterdir())
            runs[task]["interrupted"] = (code, err, epoch, files)
    for task in TASKS:
        _, err = started[task, "reference"].communicate(timeout=300)
        assert started[task, "reference"].returncode == 0, err
    resumed = {
        task: _start(["train", "--resume", str(runs[task]["resumed"]), "--no-progress"], env)
        for task in TASKS
    }
    for task, proc in resumed.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        runs[task]["resume_output"] = out + err
    return runs


@pytest.mark.parametrize("task", TASKS)
def test_a_run_writes_the_files_of_every_run_and_its_samples(scene_runs, task):
    run = scene_runs[task]["reference"]
    assert RUN_FILES | {"samples.png"} <= {p.name for p in run.iterdir()}
    record = json.loads((run / "config.json").read_text())
    assert record["task"] == task and record["image_size"] == 32 and record["head"]["width"] == 16
    config = SceneConfig.from_dict(record["run"])  # the run section is the resolved config
    assert (config.task, config.epochs, config.canvas, config.item_sizes) == (task, EPOCHS, 32, [12, 24])
    assert {"versions", "machine", "class_names", "in_chans", "model_kwargs", "data"} <= set(record)
    if task == "detect":
        assert len(record["anchors"]) == 1 and len(record["anchors"][0]) == 2
    else:
        assert record["loss"] == {"box_loss": "giou", "box_weight": None}
    metrics = json.loads((run / "metrics.json").read_text())
    assert "history" not in metrics and SCORE[task] in metrics["test"] and metrics["epochs_run"] == EPOCHS
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"] if path.suffix == ".ckpt" else load_state_dict_file(path)


@pytest.mark.parametrize("task", TASKS)
def test_ctrl_c_then_resume_ends_bit_identical_to_an_uninterrupted_run(scene_runs, task):
    runs = scene_runs[task]
    code, err, epoch, files = runs["interrupted"]
    assert code == 130, err
    assert f"Continue with: cnnkit train --resume {runs['resumed']}" in err
    assert epoch < EPOCHS, "the interrupt came during training"
    assert "metrics.json" not in files
    assert "run folder:" in runs["resume_output"]
    for name in ("best.safetensors", "last.ckpt"):
        want, got = _tensors(runs["reference"] / name), _tensors(runs["resumed"] / name)
        assert want.keys() == got.keys()
        for key, tensor in want.items():
            assert torch.equal(got[key], tensor), (name, key)
    ref, res = (json.loads((runs[k] / "metrics.json").read_text()) for k in ("reference", "resumed"))
    assert res["test"] == ref["test"] and res["best_epoch"] == ref["best_epoch"]
    drop = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    ref_history, res_history = (
        json.loads((runs[k] / "history.json").read_text()) for k in ("reference", "resumed")
    )
    assert drop(res_history) == drop(ref_history)


@pytest.mark.parametrize("task", TASKS)
def test_a_nan_in_epoch_2_exits_1_and_keeps_epoch_1(task, tmp_path, monkeypatch, capsys, scene_runs, nan_at):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # leave this process's threads as they are
    monkeypatch.setenv("CNNKIT_CACHE", str(scene_runs[task]["reference"].parent / "cache"))
    at = STEPS + 2  # epoch 2, step 2
    if task == "localize":
        import cnnkit.tasks.localization.task as module

        monkeypatch.setattr(module, "localization_loss", nan_at(module.localization_loss, at))
    else:
        from cnnkit.tasks.detection.loss import YoloLoss

        wrapped = nan_at(YoloLoss.__call__, at)
        monkeypatch.setattr(YoloLoss, "__call__", lambda self, *a, **k: wrapped(self, *a, **k))
    out = tmp_path / "run"
    capsys.readouterr()
    assert main([*ARGS[task], "--out", str(out)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(("run folder:", "epoch "))]
    assert len(lines) == 1 and "loss became nan at epoch 2, step 2" in lines[0], err
    body = load_checkpoint(out / "last.ckpt")
    assert body["epoch"] == 1 and body["global_step"] == STEPS
    assert all(bool(torch.isfinite(t).all()) for t in body["model"].values() if t.is_floating_point())
    assert not (out / "metrics.json").exists()


def _scene_image(path: Path) -> None:
    from PIL import Image

    from cnnkit.data.scenes import FashionScenes

    scene = FashionScenes(split="test", num_images=1, canvas=32, min_size=12, max_size=24).generate()
    Image.fromarray(scene.images[0, 0].numpy()).resize((64, 48)).save(path)


def _legacy_copy(run: Path, dest: Path) -> Path:
    """The run as it would have been written before this format: no run section, no last.ckpt,
    no history files (the history inside metrics.json), the settings in a "train" section."""
    dest.mkdir()
    for name in ("best.safetensors", "samples.png"):
        shutil.copy(run / name, dest / name)
    record = json.loads((run / "config.json").read_text())
    settings = record.pop("run")
    for key in ("perf", "data_sizes"):
        record.pop(key)
    record["train"] = {
        k: settings[k] for k in ("epochs", "batch_size", "lr", "seed", "limit_train", "limit_test")
    }
    (dest / "config.json").write_text(json.dumps(record))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["history"] = json.loads((run / "history.json").read_text())
    (dest / "metrics.json").write_text(json.dumps(metrics))
    return dest


@pytest.mark.parametrize("legacy", [False, True], ids=["run", "older-run"])
@pytest.mark.parametrize("task", TASKS)
def test_evaluate_report_and_detect_work_on_the_run(scene_runs, task, legacy, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNNKIT_CACHE", str(scene_runs[task]["reference"].parent / "cache"))
    run = scene_runs[task]["reference"]
    if legacy:
        run = _legacy_copy(run, tmp_path / "older")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    recorded = json.loads((run / "metrics.json").read_text())["test"][SCORE[task]]
    assert report[SCORE[task]] == pytest.approx(recorded, abs=1e-6)
    assert main(["report", str(run), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"({task})" in page and 'id="curves"' in page and "history.json is missing" not in page
    _scene_image(tmp_path / "scene.png")
    capsys.readouterr()
    assert main(["detect", str(run), str(tmp_path / "scene.png"), "--out", str(tmp_path / "drawn")]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["image"].endswith("scene.png") and (tmp_path / "drawn" / "scene.png").is_file()


# ---------------------------------------------------------------------- the options, no training
def _config(argv: list[str]) -> SceneConfig:
    from cnnkit.cli.train_scenes import config_from_args

    args = parse_command_line(argv)
    return config_from_args(args, args.task)


def test_flags_override_a_config_file_over_the_task_defaults(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({"task": "detect", "epochs": 5, "canvas": 80, "strides": [8, 16], "anchors": 2})
    )
    config = _config(["train", "detect", "--config", str(path), "--epochs", "2", "--anchors", "1"])
    got = (config.task, config.epochs, config.canvas, config.strides, config.anchors)
    assert got == ("detect", 2, 80, [8, 16], 1)
    assert (config.batch_size, config.lr) == (64, 2e-3), "detect's defaults"
    localize = _config(["train", "localize", "--box-loss", "mse", "--box-weight", "3"])
    assert (localize.canvas, localize.max_objects, localize.box_loss, localize.box_weight) == (
        64,
        1,
        "mse",
        3.0,
    )
    assert localize.weight_decay == 1e-4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "detect", "--model", "hongong_cn"], "did you mean hongong_cnn"),
        (["train", "localize", "--backbone-weights", "/nonexistent/run"], "no such run folder or file"),
        (["train", "detect", "--strides", "16,8"], "must be increasing"),
        (["train", "detect", "--item-sizes", "30,20"], "--item-sizes 30,20 must satisfy"),
        (["train", "detect", "--data", "pascal:x"], "coco:FILE.json or yolo:FOLDER"),
        (["train", "localize", "--anchors", "2"], "`cnnkit train localize` does not take --anchors"),
        (["train", "detect", "--box-loss", "mse"], "`cnnkit train detect` does not take --box-loss"),
        (["train", "detect", "--optimizer", "sgd"], "trains with adamw"),
    ],
)
def test_bad_settings_fail_in_one_line_before_any_data(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()
