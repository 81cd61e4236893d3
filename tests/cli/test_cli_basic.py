"""The foundation commands: models, summary, shape, train, evaluate, and their errors."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest

from cnnkit.cli.__main__ import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_course_models_with_counts(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    line = next(row for row in out.splitlines() if row.startswith("hongong_cnn "))
    assert "333,526" in line and "28x28x1" in line


def test_every_command_help_quotes_code_as_the_rest_of_the_help_does(capsys):
    """The module docstrings behind each command's help use reST's ``code``: the help shows `code`."""
    from cnnkit.cli.__main__ import COMMANDS

    for command in COMMANDS:
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and out.startswith("usage: cnnkit " + command), command
        assert "``" not in out, command
    assert "`conv:FILTERS:KERNEL[:STRIDE][:PADDING]`" in run(capsys, "shape", "--help")[1]


def test_counts_read_in_the_right_number():
    from cnnkit.cli._text import count

    assert [count(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert [count(n, "class", "classes") for n in (1, 3)] == ["1 class", "3 classes"]


def test_summary_of_the_exercise_matches_the_course(capsys):
    code, out, _ = run(capsys, "summary", "exercise_cnn", "--input", "200x300x3", "--batch", "50")
    assert code == 0
    assert "Total params: 903,400" in out
    assert "Activations per image (forward): 10.5 MB" in out
    assert "Activations for a batch of 50: 526.0 MB" in out
    assert "(400, 25, 38)" in out


def test_summary_of_the_shipped_model_is_the_course_cnn(capsys):
    """`cnnkit summary fashion` works as `evaluate fashion` and `viz filters fashion` do: the
    shipped run's model, the course CNN of 333,526 parameters, at its 28x28x1 input."""
    code, out, _ = run(capsys, "summary", "fashion")
    assert code == 0 and 'Model: "hongong_cnn"   input 28x28x1' in out and "Total params: 333,526" in out


def test_summary_json(capsys):
    code, out, _ = run(capsys, "summary", "hongong_cnn", "--json")
    data = json.loads(out)
    assert code == 0 and data["total_params"] == 333_526 and data["rows"][0]["name"] == "features.conv1"


def test_shape_calculator_walkthrough(capsys):
    code, out, _ = run(
        capsys,
        "shape",
        "39x31x1",
        "conv:20:4",
        "pool:2",
        "conv:40:3",
        "pool:2",
        "conv:60:3",
        "pool:2",
        "conv:80:2",
        "flatten",
    )
    assert code == 0
    assert "(80, 2, 1)" in out and "(160,)" in out
    code, out, _ = run(capsys, "shape", "70x120x3", "conv:32:7:2:same")
    assert "(32, 35, 60)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "hongong_cn"], "did you mean hongong_cnn"),
        (["summary", "hongong_cnn", "--input", "28x28x1x1"], "HxWxC"),
        (["shape", "28x28x1", "conv:x:3"], "expected integers"),
        (["shape", "28x28x1", "blur:3"], "unknown layer"),
        (["train", "--model", "nope_net", "--out", "unused"], "unknown model 'nope_net'"),
        (["evaluate", "/nonexistent/run"], "not a cnnkit run folder"),
        (["train", "--epochs", "0", "--out", "unused2"], "epochs must be >= 1"),
        (
            ["train", "--backbone-weights", "x", "--out", "unused3"],
            "`cnnkit train classify` does not take --backbone-weights",
        ),
        (["train", "--model-option", "foo=1", "--out", "unused4"], "hongong_cnn does not take 'foo'"),
        (["train", "--model-option", "depth", "--out", "unused5"], "--model-option takes KEY=VALUE"),
        (["train", "--max-shift", "-1", "--out", "unused6"], "max_shift must be >= 0"),
        (["train", "--cutout", "-1", "--out", "unused6b"], "cutout must be >= 0"),
        (["train", "--ema", "1", "--out", "unused6c"], "the weight average's decay) must be between 0 and 1"),
        (["train", "--validation-freq", "0", "--out", "unused6d"], "validation_freq must be >= 1"),
        (
            ["train", "--task", "detect", "--max-shift", "1", "--out", "unused7"],
            "`cnnkit train detect` does not take --max-shift",
        ),
        (
            ["train", "--task", "segment", "--max-grad-norm", "1", "--max-shift", "1", "--out", "unused8"],
            "`cnnkit train segment` does not take --max-shift",
        ),
        (
            ["train", "--task", "localize", "--compile", "--out", "unused9"],
            "`cnnkit train localize` does not take --compile",
        ),
        (["train", "--resume", "somewhere", "--compile"], "drop --compile"),
        (
            ["train", "--val-fraction", "0", "--out", "unused10"],
            "validation fraction must be between 0 and 1",
        ),
        (
            ["train", "--task", "detect", "--val-fraction", "0.1", "--out", "unused11"],
            "`cnnkit train detect` does not take --val-fraction",
        ),
        (
            ["viz", "gradcam", "hongong_cnn", "cat.jpg"],
            "`cnnkit viz` does not take cat.jpg (an image file goes after --image, e.g. `--image cat.jpg`",
        ),
    ],
)
def test_usage_errors_are_one_line_exit_2(capsys, argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_no_traceback_from_the_real_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "cnnkit.cli", "summary", "lenet"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert result.stderr.startswith("cnnkit: error: unknown model 'lenet'")
    assert "Traceback" not in result.stderr


SHAPE = ["shape", "28x28x1", "conv:32:3:same", "pool:2"]


def test_the_cnnkit_process_writes_warnings_as_its_errors_read():
    """The console script shows a warning as ``cnnkit: warning: ...`` (like ``cnnkit: error:``),
    not as Python's file:line of the script; code that calls ``main`` keeps Python's format."""
    script = (
        "import warnings, cnnkit.cli.__main__ as cli\n"
        "def main(**kwargs):\n"
        "    warnings.warn('emulated bf16')\n"
        "    return 0\n"
        "cli.main = main\n"
        "raise SystemExit(cli.process_main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, "cnnkit: warning: emulated bf16\n")
    kept = subprocess.run(
        [sys.executable, "-c", "import warnings, cnnkit.cli.__main__; warnings.warn('x')"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "UserWarning: x" in kept.stderr


def test_output_into_a_closed_pipe_ends_quietly_as_unix_tools_do():
    """`cnnkit shape ... | head -1`: the reader leaves before cnnkit writes; no error line, exit 141
    (128 + SIGPIPE), as a process that SIGPIPE ends. Other write failures still say what failed."""
    for unbuffered in ("", "1"):  # Python buffers a pipe's output unless PYTHONUNBUFFERED is set
        env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
        proc = subprocess.Popen(
            [sys.executable, "-m", "cnnkit", *SHAPE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        proc.stdout.close()  # the reader is gone before anything is written
        assert proc.wait(timeout=120) == 141, unbuffered
        assert proc.stderr.read() == b"", unbuffered
        proc.stderr.close()


def test_a_full_disk_under_stdout_is_still_an_error(capsys, monkeypatch):
    full = open("/dev/full", "w", buffering=1)  # noqa: SIM115  a full disk is not a reader leaving
    monkeypatch.setattr(sys, "stdout", full)
    assert main(SHAPE) == 1
    monkeypatch.undo()
    with contextlib.suppress(OSError):  # the unwritten line is still in its buffer
        full.close()
    assert "No space left on device" in capsys.readouterr().err


def test_the_command_process_freezes_what_stays_out_of_the_garbage_collector(monkeypatch, capsys):
    # The console script and `python -m cnnkit` run process_main: after it, what is left is frozen,
    # so that the interpreter's exit does not walk torch's import-time objects again.
    import gc
    from importlib.metadata import entry_points

    from cnnkit.cli.__main__ import process_main

    (script,) = entry_points(group="console_scripts", name="cnnkit")
    assert script.value == "cnnkit.cli.__main__:process_main"
    monkeypatch.setattr(sys, "argv", ["cnnkit", "models", "lenet*"])
    before = gc.get_freeze_count()
    try:
        assert process_main() == 0
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()  # the test process goes on collecting as before
    assert "lenet5" in capsys.readouterr().out


def test_the_parser_loads_no_heavy_libraries():
    # Every command builds the whole parser: the task modules must register their flags without
    # importing torchvision, torchmetrics or matplotlib (about 3 s of the start-up here).
    code = (
        "import sys; from cnnkit.cli.__main__ import build_parser, parse_command_line; build_parser(); "
        "print([m for m in ('torchvision', 'torchmetrics', 'matplotlib', 'scipy') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_train_then_evaluate_a_tiny_run(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, _ = run(
        capsys,
        "train",
        "--model",
        "hongong_cnn",
        "--epochs",
        "1",
        "--limit-train",
        "500",
        "--limit-test",
        "200",
        "--out",
        str(out_dir),
        "--no-progress",
    )
    assert code == 0 and "test accuracy" in out and "after 1 epoch (" in out
    for name in (
        "config.json",
        "best.safetensors",
        "last.ckpt",
        "history.csv",
        "history.json",
        "curves.png",
        "metrics.json",
    ):
        assert (out_dir / name).is_file(), name
    config = json.loads((out_dir / "config.json").read_text())
    assert config["run"]["seed"] == 42 and config["versions"]["torch"] and config["machine"]["cpu_count"]
    metrics = json.loads((out_dir / "metrics.json").read_text())
    code, out, _ = run(capsys, "evaluate", str(out_dir), "--limit-test", "200")
    assert code == 0
    assert f"accuracy {metrics['test_accuracy']:.4f}" in out  # same weights, same 200 images
    assert "Ankle boot" in out
    assert "torch.compile" not in out  # 200 images do not pay for compiling: the default stays eager
    code, out, _ = run(capsys, "evaluate", str(out_dir), "--limit-test", "200", "--no-compile", "--json")
    report = json.loads(out)
    assert code == 0 and report["compiled"] is False and "compile_seconds" not in report
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert report["cascade"] is None  # 200 images do not repay building the int8 copy
    # The int8 cascade when asked for: the float predictions, so the same per-class counts.
    code, out, _ = run(capsys, "evaluate", str(out_dir), "--limit-test", "200", "--cascade", "--json")
    cascaded = json.loads(out)
    assert code == 0 and cascaded["cascade"]["images"] == 200 and cascaded["cascade"]["rescored"] > 0
    assert cascaded["confusion_matrix"] == report["confusion_matrix"]
    code, out, _ = run(capsys, "evaluate", str(out_dir), "--limit-test", "200", "--cascade")
    assert code == 0 and "scored again in float32, so the predictions are float32's" in out
    assert "The int8 copy came from the cache" in out
    # int8: calibrated on training images, scored on the same test images, close to float32.
    code, out, _ = run(capsys, "evaluate", str(out_dir), "--limit-test", "200", "--int8", "--json")
    report = json.loads(out)
    assert code == 0 and report["int8"]["calibration_images"] == 2000 and report["amp"] is None
    assert abs(report["accuracy"] - metrics["test_accuracy"]) <= 0.03
    # compiled with frozen weights: the same scores up to a prediction or two, compile time apart
    code, out, err = run(capsys, "evaluate", str(out_dir), "--limit-test", "200", "--compile", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert code == 0 and abs(report["accuracy"] - metrics["test_accuracy"]) <= 0.01
    assert 0 < report["compile_seconds"] <= report["seconds"] and report["compiled"] is True
    code, _, err = run(capsys, "evaluate", str(out_dir), "--int8", "--compile")
    assert code == 2 and "choose one" in err and "Traceback" not in err
    code, _, err = run(capsys, "evaluate", str(out_dir), "--int8", "--cascade")
    assert code == 2 and "choose one" in err and "Traceback" not in err
    code, _, err = run(capsys, "train", "--out", str(out_dir), "--epochs", "1")
    assert code == 2 and "already exists" in err


def test_compiled_training_run_reports_its_compile_time(capsys, tmp_path):
    out_dir = tmp_path / "run"
    argv = ["train", "--compile", "--epochs", "1", "--limit-train", "300", "--limit-test", "100"]
    code, out, _ = run(capsys, *argv, "--out", str(out_dir), "--no-progress")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    config = json.loads((out_dir / "config.json").read_text())
    assert code == 0 and config["run"]["compile"] is True
    assert 0 < metrics["compile_seconds"] <= metrics["train_seconds"]
    assert f"compiling (the model): {metrics['compile_seconds']:.1f} s" in out


def test_int8_evaluation_refuses_a_gpu(capsys, monkeypatch):
    import torch

    import cnnkit.engine.device

    monkeypatch.setattr(cnnkit.engine.device, "pick_device", lambda name=None: torch.device("cuda"))
    code, _, err = run(capsys, "evaluate", "/nonexistent", "--int8", "--device", "cuda")
    assert code == 2 and "--int8 runs on the CPU, not cuda" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["shape", "28x28x1", "conv:0:3"], "must be >= 1"),
        (["evaluate", "/nonexistent", "--limit-test", "-5"], "--limit-test must be >= 1"),
        (["evaluate", "/nonexistent", "--limit-test", "0"], "--limit-test must be >= 1"),
    ],
)
def test_nonpositive_sizes_are_usage_errors(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


@pytest.mark.parametrize(
    ("argv", "read_as"),
    [
        (["train", "--model", "m"], ["train", "classify", "--model", "m"]),
        (["train", "--task", "detect", "--epochs", "1"], ["train", "detect", "--epochs", "1"]),
        (["--debug", "train", "--task=segment"], ["--debug", "train", "segment"]),
        (["train", "localize", "--epochs", "1"], ["train", "localize", "--epochs", "1"]),
        (["train", "--help"], ["train", "--help"]),
        (["evaluate", "train"], ["evaluate", "train"]),  # a run folder named train
    ],
)
def test_the_train_task_is_read_from_either_spelling(argv, read_as):
    from cnnkit.cli.train import task_first

    assert task_first(argv) == read_as


def test_resume_without_a_task_reads_the_run_s_task(tmp_path):
    from cnnkit.cli.train import task_first

    (tmp_path / "config.json").write_text(json.dumps({"task": "detect", "run": {}}))
    assert task_first(["train", "--resume", str(tmp_path)]) == ["train", "detect", "--resume", str(tmp_path)]


def test_train_validation_freq_validates_every_nth_epoch_and_the_last(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--preset", "fast", "--epochs", "3", "--validation-freq", "2", "--limit-train", "600"]
    code, _, err = run(capsys, *argv, "--limit-test", "100", "--no-progress", "--out", str(out))
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["run"]["validation_freq"] == 2
    rows = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in rows if "val_loss" in row] == [2, 3] and len(rows) == 3


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_help_and_usage_errors_answer_without_importing_torch():
    """Building the parser imports no torch (2-3 s): `--help` and a mistyped flag answer at once."""
    done = _python(
        "import sys\n"
        "from cnnkit.cli.__main__ import build_parser, main\n"
        "build_parser()\n"
        "assert main(['evaluate', 'run', '--no-such-flag']) == 2\n"
        "print('torch' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False" and "--no-such-flag" in done.stderr


def test_shape_runs_without_torch():
    """`cnnkit shape` is arithmetic: the course CNN's sizes (혼공머신 ch. 8) without importing torch."""
    done = _python(
        "import sys\n"
        "from cnnkit.cli.__main__ import main\n"
        "assert main(['shape', '28x28x1', 'conv:32:3:same', 'pool:2', 'conv:64:3:same', 'pool:2',\n"
        "             'flatten', 'dense:100', 'dense:10']) == 0\n"
        "print('torch' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "False" and "total parameters: 333,526" in lines
