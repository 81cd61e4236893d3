"""Segmentation runs (an FCN-8s and a Mask R-CNN) write the one run-folder format, resume after a
real Ctrl-C bit-identical to an uninterrupted run, stop on a NaN with the last finished epoch
kept, and work with `cnnkit evaluate`, `cnnkit report` and `cnnkit segment`."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cnnkit.cli.__main__ import main
from cnnkit.engine.checkpoint import load_checkpoint

TINY = ["--canvas", "32", "--item-sizes", "12,24", "--train-images", "16", "--limit-test", "4",
        "--epochs", "2", "--batch-size", "8", "--seed", "3"]  # fmt: skip
HEADS = {
    "fcn8s": ["--head", "fcn8s", *TINY],
    "maskrcnn": ["--head", "maskrcnn", "--model", "hongong_cnn", *TINY],
}
# The files every run folder has (a classification run's, runs/folder.py).
RUN_FILES = {
    "config.json", "best.safetensors", "last.ckpt", "history.csv", "history.json", "curves.png",
    "metrics.json", "report.html",
}  # fmt: skip
TIMINGS = {"train_seconds", "wall_seconds_this_session", "train_cpu_seconds", "test_seconds",
           "load_average_at_end"}  # fmt: skip


def _env(cache) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["CNNKIT_CACHE"] = str(cache)
    return env


def _cnnkit(*args: str, cache, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cnnkit.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(cache),
        # A shell runs background jobs with SIGINT ignored, and a child inherits that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


def _saved_epoch(path) -> int:
    try:
        return int(load_checkpoint(path)["epoch"])
    except Exception:  # not there yet
        return -1


def _interrupted_then_resumed(head: str, out, cache) -> dict:
    """Train with progress lines on stderr, Ctrl-C once epoch 1's line is printed, resume."""
    proc = _cnnkit("train", "segment", *HEADS[head], "--out", str(out), cache=cache)
    try:
        deadline = time.monotonic() + 300
        seen = []
        for line in proc.stderr:  # one line per epoch: stderr is not a terminal
            seen.append(line)
            if line.startswith("epoch 1/2") or time.monotonic() > deadline:
                break
        # The line comes just before epoch 1's checkpoint: interrupt once that is written.
        while _saved_epoch(out / "last.ckpt") < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "training ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = "".join(seen) + stderr
    interrupted = {
        "code": proc.returncode,
        "stderr": stderr,
        "epoch": load_checkpoint(out / "last.ckpt")["epoch"],
    }
    resumed = _cnnkit("train", "--resume", str(out), "--no-progress", cache=cache)
    r_out, r_err = resumed.communicate(timeout=600)
    return {"interrupted": interrupted, "resume_code": resumed.returncode, "resume_out": r_out + r_err}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A scene cache holding the tiny runs' scenes (made once, here, not by each process)."""
    from cnnkit.tasks.segmentation.data import scene_splits, scenes_with

    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNKIT_CACHE", str(folder))
        scene_splits(
            scenes_with({"canvas": 32, "min_size": 12, "max_size": 24}), train_images=16, test_images=4
        )
    return folder


@pytest.fixture(scope="module", params=list(HEADS))
def runs(request, tmp_path_factory, cache):
    """(uninterrupted run, interrupted-and-resumed run, what happened) for one head; the two
    trainings run side by side (one thread each)."""
    head = request.param
    root = tmp_path_factory.mktemp(head)
    reference = _cnnkit("train", "segment", *HEADS[head], "--out", str(root / "reference"), "--no-progress",
                        cache=cache)  # fmt: skip
    try:
        result = _interrupted_then_resumed(head, root / "resumed", cache)
        ref_out, ref_err = reference.communicate(timeout=600)
    finally:
        if reference.poll() is None:
            reference.kill()
    assert reference.returncode == 0, ref_err
    result.update(head=head, reference=root / "reference", resumed=root / "resumed", reference_out=ref_out)
    return result


def test_the_folder_has_the_files_of_every_run(runs):
    for folder in (runs["reference"], runs["resumed"]):
        assert {p.name for p in folder.iterdir()} == RUN_FILES
        record = json.loads((folder / "config.json").read_text())
        assert record["task"] == "segment" and record["run"]["task"] == "segment"
        assert record["run"]["head"] == runs["head"] and record["head"] == runs["head"]
        history = json.loads((folder / "history.json").read_text())
        assert len(history) == 2
    line = "test mask mAP" if runs["head"] == "maskrcnn" else "test mIoU"
    assert line in runs["reference_out"] and line in runs["resume_out"]


def test_ctrl_c_then_resume_is_bit_identical_to_an_uninterrupted_run(runs):
    interrupted = runs["interrupted"]
    assert interrupted["code"] == 130, interrupted["stderr"]
    assert "Traceback" not in interrupted["stderr"]
    out = runs["resumed"]
    assert [line for line in interrupted["stderr"].splitlines() if line.startswith("cnnkit:")] == [
        f"cnnkit: interrupted; {out / 'last.ckpt'} holds the last finished epoch. "
        f"Continue with: cnnkit train --resume {out}"
    ]
    assert interrupted["epoch"] == 1  # interrupted in epoch 2 (or while testing)
    assert runs["resume_code"] == 0, runs["resume_out"]
    best = [load_file(folder / "best.safetensors") for folder in (runs["reference"], out)]
    last = [load_checkpoint(folder / "last.ckpt") for folder in (runs["reference"], out)]
    assert best[0].keys() == best[1].keys() and last[0]["model"].keys() == last[1]["model"].keys()
    for key in best[0]:
        assert torch.equal(best[0][key], best[1][key]), key
    for key in last[0]["model"]:
        assert torch.equal(last[0]["model"][key], last[1]["model"][key]), key
    assert last[0]["epoch"] == last[1]["epoch"] == 2 and last[0]["num_threads"] == last[1]["num_threads"] == 1
    metrics = [json.loads((folder / "metrics.json").read_text()) for folder in (runs["reference"], out)]
    for m in metrics:
        for key in TIMINGS:
            m.pop(key)
    assert metrics[0] == metrics[1]


def test_evaluate_report_and_segment_work_on_the_run(runs, tmp_path, capsys):
    run = runs["reference"]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    metrics = json.loads((run / "metrics.json").read_text())
    if runs["head"] == "maskrcnn":
        assert report["segm"]["map"] == pytest.approx(metrics["test_segm_map"], abs=1e-6)
    else:
        assert report["miou"] == pytest.approx(metrics["test_miou"], abs=1e-6)
    assert main(["report", str(run), "--out", str(tmp_path / "report.html")]) == 0
    assert "(segment)" in (tmp_path / "report.html").read_text(encoding="utf-8")
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)).save(image)
    assert main(["segment", str(run), str(image), "--out", str(tmp_path / "overlays")]) == 0
    assert (tmp_path / "overlays" / "scene_segment.png").is_file()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.search(r"scene\.png: (1 class|[02-9]\d* classes|1 instance|[02-9]\d* instances) \(", line), line
    if runs["head"] != "maskrcnn":  # the count is that of the classes listed (background is not one)
        count, listed = re.search(r": (\d+) class(?:es)? \((.*)\) ->", line).groups()
        assert int(count) == (0 if listed == "background only" else len(listed.split(", "))), line


@pytest.mark.parametrize("head", list(HEADS))
def test_a_nan_in_epoch_2_stops_with_epoch_1_kept_and_no_metrics(head, tmp_path, cache, capsys, monkeypatch):
    from cnnkit.tasks.segmentation.instance_task import MaskRCNNTask
    from cnnkit.tasks.segmentation.task import SegmentTask

    task = MaskRCNNTask if head == "maskrcnn" else SegmentTask
    real = task.train_step

    def train_step(self, trainer, batch):
        out = real(self, trainer, batch)
        if trainer.epoch == 1:  # epoch 2 (one finished)
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(task, "train_step", train_step)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CNNKIT_CACHE", str(cache))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["train", "segment", *HEADS[head], "--out", str(tmp_path / "run"), "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("cnnkit:")]
    assert len(errors) == 1 and "loss became nan at epoch 2" in errors[0] and "Traceback" not in err
    body = load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert body["epoch"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in body["model"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_old_run_folders_without_a_task_in_their_run_section_still_load(runs, tmp_path):
    import shutil

    from cnnkit.runs.folder import load_run

    old = tmp_path / "old"
    shutil.copytree(runs["reference"], old)
    record = json.loads((old / "config.json").read_text())
    for key in ("task", "max_grad_norm"):
        del record["run"][key]
    (old / "config.json").write_text(json.dumps(record))
    model, loaded = load_run(old, "cpu")
    assert loaded["head"] == runs["head"] and not model.training
    assert math.isfinite(sum(float(p.detach().sum()) for p in model.parameters()))


def test_command_line_options_become_the_config(tmp_path):
    from cnnkit.cli.__main__ import parse_command_line
    from cnnkit.cli.train_segment import config_from_args
    from cnnkit.errors import UsageError

    def config(*argv):
        return config_from_args(parse_command_line(["train", "segment", *argv]), "segment")

    fcn = config("--data", "fashion-mnist", "--canvas", "48", "--max-grad-norm", "2")
    assert (fcn.task, fcn.data, fcn.head, fcn.batch_size) == ("segment", "fashion-scenes", "fcn8s", 16)
    assert fcn.scenes == {"canvas": 48} and fcn.max_grad_norm == 2.0
    (tmp_path / "run.json").write_text('{"head": "maskrcnn", "batch_size": 4, "scenes": {"canvas": 96}}')
    mask = config("--config", str(tmp_path / "run.json"), "--model", "hongong_cnn", "--noise", "3")
    # Mask R-CNN's defaults where neither the file nor a flag gives a value.
    assert (mask.head, mask.batch_size, mask.optimizer, mask.epochs, mask.lr) == (
        "maskrcnn",
        4,
        "adamw",
        4,
        1e-3,
    )
    assert mask.scenes == {"canvas": 96, "noise": 3.0}
    assert config("--head", "maskrcnn", "--model", "maskrcnn_resnet50_fpn").model == "maskrcnn_resnet50_fpn"
    with pytest.raises(UsageError, match=r"unknown model 'hongong_cn'; did you mean hongong_cnn"):
        config("--model", "hongong_cn")
    with pytest.raises(UsageError, match=r"takes --head maskrcnn, not unet"):
        config("--model", "maskrcnn_resnet50_fpn", "--head", "unet")
    with pytest.raises(UsageError, match=r"--backbone-weights is for FCN and U-Net heads"):
        config("--head", "maskrcnn", "--model", "hongong_cnn", "--backbone-weights", "x")
    (tmp_path / "bad.json").write_text('{"hed": "unet"}')
    with pytest.raises(UsageError, match=r"unknown config key 'hed'; did you mean head"):
        config("--config", str(tmp_path / "bad.json"))
