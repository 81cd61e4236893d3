"""F9-F14: every documented error is one line naming the file or argument, with the right exit
code and no traceback; impossible sizes are refused (or measured) before anything is allocated."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from cnnkit.cli.__main__ import error_line, exit_code, main

from .conftest import subprocess_env


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def broken_runs(tmp_path):
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "config.json").write_text("[1, 2]")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text('{"foo": 1}')
    (tmp_path / "norun").mkdir()
    (tmp_path / "norun" / "config.json").write_text('{"task": "classify"}')
    (tmp_path / "badkey").mkdir()
    (tmp_path / "badkey" / "config.json").write_text('{"task": "classify", "run": {"foo": 1}}')
    (tmp_path / "img.png").write_bytes(b"")
    return tmp_path


BROKEN = [
    ("list", "is not a run record", "is not a run record"),
    ("foreign", "names no task", "names no task"),
    ("norun", "is damaged or incomplete (no 'run' entry)", "without resumable settings"),
    ("badkey", "unknown config key 'foo'", "unknown config key 'foo'"),
]


@pytest.mark.parametrize("command", ["predict", "evaluate", "resume"])
@pytest.mark.parametrize(("folder", "message", "resume_message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_config_json_that_is_not_a_run_is_one_line(
    broken_runs, capsys, command, folder, message, resume_message
):
    run = str(broken_runs / folder)
    argv = {
        "predict": ["predict", run, str(broken_runs / "img.png")],
        "evaluate": ["evaluate", run],
        "resume": ["train", "--resume", run, "--no-progress"],
    }[command]
    assert _run(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(broken_runs / folder) in line, line
    assert (resume_message if command == "resume" else message) in line, line


def test_a_missing_run_folder_is_not_called_an_unknown_model(tmp_path, capsys):
    (tmp_path / "img.png").write_bytes(b"")
    assert _run(["predict", "nope/", str(tmp_path / "img.png")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("cnnkit: error: nope/: no such run folder") and "unknown model" not in line


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\xff\xfe\x00not json", "UnicodeDecodeError"),
        (b"epochs = 3\n", "JSONDecodeError"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
    ids=["not-utf8", "not-json", "deep"],
)
def test_a_config_that_is_not_json_names_the_file(tmp_path, capsys, content, reason):
    (tmp_path / "settings.json").write_bytes(content)
    argv = ["train", "--config", str(tmp_path / "settings.json"), "--out", str(tmp_path / "out")]
    assert _run(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--config {tmp_path / 'settings.json'} is not a JSON config file" in line and reason in line


def test_out_pointing_at_a_file_is_one_line(tmp_path, capsys, small_data):
    (tmp_path / "taken").write_text("a file")
    for out, message in (
        (tmp_path / "taken", "is a file, not a folder"),
        (tmp_path / "taken" / "run", "is a file"),
    ):
        argv = ["train", "--data", str(small_data), "--epochs", "1", "--out", str(out), "--no-progress"]
        assert _run(argv) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert str(out) in line and message in line, line
    assert (tmp_path / "taken").read_text() == "a file"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["train", "--task", "detect", "--head", "unet"], "--head"),
        (["train", "--task", "segment", "--box-loss", "mse"], "--box-loss"),
        (["train", "--task", "localize", "--anchors", "5"], "--anchors"),
    ],
    ids=["detect-head", "segment-box-loss", "localize-anchors"],
)
def test_another_tasks_flag_is_refused_not_ignored(argv, flag, tmp_path, capsys):
    assert _run([*argv, "--epochs", "1", "--out", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"does not take {flag}" in line, line
    assert not (tmp_path / "out").exists()


def test_summary_of_an_impossible_input_says_what_it_would_need(capsys):
    assert _run(["summary", "hongong_cnn", "--input", "99999999x99999999x1"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    # 99999999² float32 pixels = 39,999,999,200,000,004 bytes, in decimal GB as the course counts.
    assert "--input 99999999x99999999x1 would need 39,999,999.2 GB for one image alone" in line


def test_summary_of_a_huge_model_counts_without_allocating(tmp_path):
    # hongong_cnn at 3000x3000: conv 1->32 (320) + conv 32->64 (18,496) + dense from
    # 64 x 750 x 750 = 36,000,000 inputs to 100 (3,600,000,100) + dense 100->10 (1,010).
    with open(tmp_path / "out.json", "w") as out, open(tmp_path / "err.txt", "w") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cnnkit.cli",
                "summary",
                "hongong_cnn",
                "--input",
                "3000x3000x1",
                "--json",
            ],
            stdout=out,
            stderr=err,
            env=subprocess_env(),
        )
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
    assert os.waitstatus_to_exitcode(status) == 0, (tmp_path / "err.txt").read_text()
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["total_params"] == 320 + 18_496 + 3_600_000_100 + 1_010
    assert report["param_bytes"] == 4 * report["total_params"]  # 14.4 GB that need not exist here
    # KB: a third of the 14.4 GB the weights would take (the child's peak was 0.8-3.2 GB in runs
    # on one machine; what moves it is not known, the weights are never allocated).
    assert usage.ru_maxrss < 4.8 * 1024**2


@pytest.mark.parametrize(
    "exc",
    [
        Image.DecompressionBombError("Image size (900000000 pixels) exceeds limit"),
        RecursionError("maximum recursion depth exceeded"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        json.JSONDecodeError("Expecting value", "x", 0),
        NotADirectoryError(20, "Not a directory", "runs/file/x"),
        OverflowError("cannot fit 'int' into an index-sized integer"),
    ],
    ids=["bomb", "recursion", "unicode", "json", "notadir", "overflow"],
)
def test_the_last_line_of_defence_maps_every_documented_error(exc):
    code = exit_code(exc)
    assert code == 2
    line = error_line(exc, code)
    assert "\n" not in line and line
    if isinstance(exc, OSError):
        assert line.startswith("runs/file/x: Not a directory")
