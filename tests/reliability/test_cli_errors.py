"""Every command checks its arguments before any work; errors are one line on stderr, exit code 2
for usage and bad input, 1 for failures while running, and a traceback only with --debug."""

from __future__ import annotations

import errno
import json
import subprocess

import pytest

from cnnkit.cli.__main__ import main
from cnnkit.errors import TrainingError

from .conftest import cnnkit_cmd, subprocess_env


def _one_error_line(stderr: str) -> str:
    """The error, the only line on stderr (a run folder is named only once it holds a run)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def no_data_loading(monkeypatch):
    """Argument errors must come before any data is read."""

    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded before the arguments were checked")

    monkeypatch.setattr("cnnkit.runs.classify.load_dataset", refuse)


USAGE_ERRORS = [
    (["train", "--model", "resnet3"], "unknown model 'resnet3'"),
    (["train", "--epochs", "0"], "epochs must be >= 1, got 0"),
    (["train", "--epochs", "two"], "invalid int value: 'two'"),
    (["train", "--batch-size", "0"], "batch size must be >= 1, got 0"),
    (["train", "--lr", "-0.001"], "learning rate must be > 0"),
    (["train", "--lr", "inf"], "--lr must be a finite number"),
    (["train", "--optimizer", "sgdd"], "--optimizer must be one of adam, adamw, sgd, rmsprop, got 'sgdd'"),
    (["train", "--patience", "-1"], "patience must be >= 0"),
    (["train", "--limit-train", "1"], "limit_train must be >= 2"),
    (["train", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", "--data", "/no/such/folder"], "--data must be 'fashion-mnist' or a folder"),
    (["train", "--preset", "slow"], "invalid choice: 'slow'"),
    (["train", "--config", "/no/such/run.json"], "No such file"),
    (["train", "--resume", "/no/such/run"], "/no/such/run is not a cnnkit run folder"),
    (["summary", "hongong_cnn", "--input", "28x"], "--input must look like HxWxC"),
    (["summary", "no_such_model"], "unknown model 'no_such_model'"),
    (["shape", "28x28x1", "conv:a:3"], "expected integers"),
    (["evaluate", "/no/such/run"], "/no/such/run is not a cnnkit run folder"),
    (["no-such-command"], "invalid choice: 'no-such-command'"),
]


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return exc.code


@pytest.mark.parametrize(("argv", "message"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_2_with_one_line_before_any_work(argv, message, capsys, no_data_loading, tmp_path):
    if argv[0] == "train" and "--resume" not in argv:
        argv = [*argv, "--out", str(tmp_path / "out")]
    assert _exit_code(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("cnnkit") and message in line, line
    assert not (tmp_path / "out").exists()  # nothing was created


def test_a_damaged_data_folder_is_a_usage_error_naming_the_file(tmp_path, capsys, small_data):
    bad = tmp_path / "data"
    bad.mkdir()
    for f in small_data.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    images = bad / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])  # truncated
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(images) in line and "file truncated?" in line


def test_a_bad_model_option_value_names_the_option_and_no_folder(tmp_path, capsys, small_data):
    # Option names are checked with the settings; values only when the model is built, after the
    # data is read: still one line, and no "run folder: ..." for a folder that was never made.
    argv = ["train", "--data", str(small_data), "--model", "fashion_bn_cnn", "--model-option", "depth=0"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("cnnkit: error: depth must be an int >= 1"), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device"),
            "OSError: [Errno 28] No space left on device",
        ),
        (
            TrainingError("loss became nan at epoch 1, step 3 (global step 3)"),
            "loss became nan at epoch 1, step 3 (global step 3)",
        ),
    ],
)
def test_failures_while_running_exit_1_with_one_line(error, shown, monkeypatch, capsys, tmp_path):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("cnnkit.runs.train.train_run", fail)
    assert main(["train", "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    assert _one_error_line(capsys.readouterr().err) == f"cnnkit: error: {shown}"


@pytest.mark.parametrize("argv", [["--debug", "train"], ["train", "--debug"]], ids=["before", "after"])
def test_debug_before_or_after_the_command_lets_the_exception_through(argv, no_data_loading):
    with pytest.raises(ValueError, match="unknown model 'resnet3'"):
        main([*argv, "--model", "resnet3"])


def test_cli_processes_one_line_errors_and_debug_tracebacks(tmp_path):
    # Real processes, started together to share the import time.
    runs = {
        "unknown model": (["train", "--model", "resnet3"], 2, "unknown model 'resnet3'"),
        "malformed --input": (
            ["summary", "hongong_cnn", "--input", "28by28"],
            2,
            "--input must look like HxWxC",
        ),
        "missing run folder": (["evaluate", str(tmp_path / "nope")], 2, "is not a cnnkit run folder"),
        "bad --epochs": (["train", "--epochs", "0"], 2, "epochs must be >= 1, got 0"),
        "--debug": (["train", "--model", "resnet3", "--debug"], 1, None),
    }
    procs = {
        name: subprocess.Popen(
            cnnkit_cmd(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env()
        )
        for name, (argv, _, _) in runs.items()
    }
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        _, code, message = runs[name]
        assert proc.returncode == code, (name, stderr)
        if message is None:  # --debug: the full traceback, ending in the error itself
            assert "Traceback (most recent call last)" in stderr, name
            assert stderr.strip().splitlines()[-1].startswith("ValueError: unknown model 'resnet3'"), name
        else:
            line = _one_error_line(stderr)
            assert line.startswith("cnnkit: error:") and message in line, (name, line)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"task": "segment", "model": "unet_small"}, "is a segment run without resumable settings"),
        (
            {"task": "classify", "run": {"model": "hongong_cnn"}, "finetune": {"weights": "x"}},
            "is a finetune run; `cnnkit train --resume` continues runs of `cnnkit train`",
        ),
        ({"task": "classify", "run": "hongong_cnn"}, "is a classify run without resumable settings"),
    ],
)
def test_resume_refuses_run_folders_of_other_commands(record, message, tmp_path, capsys, no_data_loading):
    (tmp_path / "config.json").write_text(json.dumps(record))
    (tmp_path / "last.ckpt").write_bytes(b"")
    assert main(["train", "--resume", str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"cnnkit: error: {tmp_path} {message}"), line
