"""`cnnkit train --data FOLDER` on real Fashion-MNIST items as image files, against the IDX path."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from cnnkit.cli.__main__ import main

EPOCHS = "4"


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors: one line, exit 2
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on 2 shared cores, two OpenMP threads stall each other (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, write_fashion_folders):
    # 100 items per class: 700 train, 100 val, 200 test on every path.
    return write_fashion_folders(tmp_path_factory.mktemp("fashion-folders"), per_class=100)


@pytest.fixture(scope="module")
def runs(folders, tmp_path_factory):
    """hongong_cnn trained briefly on the same 1,000 images through the three data paths."""
    out = tmp_path_factory.mktemp("runs")
    common = ["--model", "hongong_cnn", "--epochs", EPOCHS, "--seed", "0", "--device", "cpu", "--no-progress"]
    paths = {
        "idx": [str(folders["idx"]), "--val-fraction", "0.125"],  # 800 -> 700 + 100
        "splits": [str(folders["splits"])],  # train/ val/ test/
        "flat": [str(folders["flat"]), "--val-fraction", "0.1", "--test-fraction", "0.2"],
    }
    result = {}
    with pytest.MonkeyPatch.context() as patch:  # the HTML report (5 s each) is tested below
        patch.setattr("cnnkit.viz.report.write_report", lambda *args, **kwargs: None)
        for name, data in paths.items():
            code = main(["train", "--data", *data, *common, "--out", str(out / name)])
            assert code == 0, name
            result[name] = out / name
    return result


def _json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_three_paths_reach_the_same_accuracy(runs, capsys):
    accuracy = {name: _json(folder / "metrics.json")["test_accuracy"] for name, folder in runs.items()}
    print(f"test accuracy by data path: {accuracy}")
    sizes = {name: _json(folder / "config.json")["data_sizes"] for name, folder in runs.items()}
    assert all(s == {"train": 700, "val": 100, "test": 200} for s in sizes.values()), sizes
    assert all(a > 0.6 for a in accuracy.values()), accuracy  # chance is 0.1
    assert max(accuracy.values()) - min(accuracy.values()) < 0.08, accuracy


def test_run_folder_records_the_image_settings(runs):
    config = _json(runs["splits"] / "config.json")
    assert config["run"]["image_size"] == [28, 28] and config["run"]["channels"] == 1
    assert config["input_shape"] == [1, 28, 28] and config["num_classes"] == 10
    assert config["class_names"][0] == "0_T-shirt-top"
    assert config["data"]["kind"] == "image-folder" and config["data"]["layout"] == "splits"
    assert config["data"]["sizes"] == config["data_sizes"]
    assert config["preprocess"] == {"resize": "crop"}
    flat = _json(runs["flat"] / "config.json")
    assert flat["data"]["layout"] == "classes" and flat["run"]["test_fraction"] == 0.2
    idx = _json(runs["idx"] / "config.json")
    assert idx["data"]["kind"] == "idx" and idx["run"]["image_size"] is None
    for folder in runs.values():
        assert (folder / "best.safetensors").is_file()


@pytest.mark.parametrize("name", ["flat", "splits"])
def test_evaluate_rescores_the_same_test_images(runs, capsys, name):
    code, out, _ = run(capsys, "evaluate", str(runs[name]), "--device", "cpu", "--json")
    report = json.loads(out)
    metrics = _json(runs[name] / "metrics.json")
    assert code == 0 and report["num_samples"] == 200
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    assert report["confusion_matrix"] == metrics["confusion_matrix"]


def test_image_size_and_channels(folders, tmp_path, capsys):
    code = main(
        [
            "train",
            "--data",
            str(folders["splits"]),
            "--image-size",
            "32",
            "--channels",
            "3",
            "--whiten",
            "--epochs",
            "1",
            "--limit-train",
            "100",
            "--limit-test",
            "50",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    capsys.readouterr()
    config = _json(tmp_path / "run" / "config.json")
    assert code == 0 and config["input_shape"] == [3, 32, 32] and config["run"]["image_size"] == [32, 32]
    assert config["data_sizes"]["train"] == 100 and config["data_sizes"]["test"] == 50
    assert (tmp_path / "run" / "report.html").is_file()
    # --whiten on RGB images: the course CNN's 32 first filters are the 16 leading directions of
    # its 3×3×3 patches and their negatives, kept frozen through training.
    best = load_file(tmp_path / "run" / "best.safetensors")
    first, bias = best["features.conv1.weight"], best["features.conv1.bias"]
    assert config["run"]["whiten"] is True and torch.equal(first[16:], -first[:16]) and not bias.any()
    code, out, _ = run(
        capsys, "evaluate", str(tmp_path / "run"), "--device", "cpu", "--json", "--limit-test", "50"
    )
    assert code == 0 and json.loads(out)["num_samples"] == 50
    assert json.loads(out)["accuracy"] == _json(tmp_path / "run" / "metrics.json")["test_accuracy"]


def _usage_error(capsys, *argv):
    code, _, err = run(capsys, "train", *argv, "--epochs", "1", "--device", "cpu", "--no-progress")
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err and len([line for line in lines if "error" in line]) == 1, err
    return lines[-1]


def test_usage_errors(folders, tmp_path, capsys):
    assert "no such folder" in _usage_error(capsys, "--data", str(tmp_path / "absent"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no class sub-folders" in _usage_error(capsys, "--data", str(empty))
    (empty / "cats").mkdir()
    (empty / "cats" / "notes.txt").write_text("not an image")
    assert "has no image files" in _usage_error(capsys, "--data", str(empty))
    first = next((folders["flat"] / "0_T-shirt-top").iterdir())
    (empty / "cats" / first.name).write_bytes(first.read_bytes())
    # One class folder, as when --data points one level too deep, and its train/ variant.
    assert f"{empty} has one class folder (cats); a classifier needs two or more" in _usage_error(
        capsys, "--data", str(empty)
    )
    (tmp_path / "one-split" / "train").mkdir(parents=True)
    (empty / "cats").rename(tmp_path / "one-split" / "train" / "cats")
    assert "train has one class folder (" in _usage_error(capsys, "--data", str(tmp_path / "one-split"))
    for bad in ("0", "abc", "28x28x3", "-5", "5000"):
        err = _usage_error(capsys, "--data", str(folders["flat"]), "--image-size", bad)
        assert "--image-size" in err, err
    err = _usage_error(capsys, "--data", str(folders["flat"]), "--image-size", "32x24")
    assert "square" in err
    err = _usage_error(capsys, "--data", "fashion-mnist", "--image-size", "32")
    assert "apply to image folders" in err
    assert "not the file" in _usage_error(capsys, "--data", str(folders["idx"] / "t10k-images-idx3-ubyte.gz"))
    assert "--image-size: invalid int value" in _usage_error(
        capsys, "--task", "segment", "--image-size", "16x8"
    )
    assert not any(tmp_path.glob("runs*"))  # nothing was written


def test_bad_files_stop_the_run_or_are_left_out_with_on_error_skip(folders, tmp_path, capsys):
    """A damaged JPEG in a class folder: by default the run stops before training, naming the file
    and --on-error skip; with --on-error skip (and --resize pad) it trains without the file, lists
    it, records both settings, and `cnnkit evaluate` rescores the run as it scored itself."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folders["flat"], data)
    bad = next(p for p in sorted(data.iterdir()) if p.is_dir()) / "damaged.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"cut short")
    argv = ["train", "--data", str(data), "--epochs", "1", "--limit-train", "100", "--limit-test", "50"]
    argv += ["--device", "cpu", "--no-progress"]
    code, _, err = run(capsys, *argv, "--out", str(tmp_path / "stopped"))
    assert code == 2 and str(bad) in err and "--on-error skip" in err and "Traceback" not in err
    assert not (tmp_path / "stopped").exists()  # made for the run, left empty: removed again

    out = tmp_path / "skipped"
    code, stdout, _ = run(capsys, *argv, "--on-error", "skip", "--resize", "pad", "--out", str(out))
    assert code == 0 and "1 bad image file left out (--on-error skip)" in stdout and str(bad) in stdout
    config, metrics = _json(out / "config.json"), _json(out / "metrics.json")
    assert config["run"]["on_error"] == "skip" and config["run"]["resize"] == "pad"
    assert config["data"]["resize"] == "pad" and config["preprocess"] == {"resize": "pad"}
    assert [r.split(":")[0] for r in metrics["skipped_files"]] == [str(bad)]
    code, stdout, _ = run(capsys, "evaluate", str(out), "--device", "cpu", "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] == metrics["test_accuracy"]
    assert json.loads(stdout)["num_samples"] == 50


def test_the_class_balance_of_the_splits_is_printed_first(folders, tmp_path, capsys):
    """As `cnnkit finetune` does: images per class in train / val / test, before training."""
    argv = ["train", "--data", str(folders["flat"]), "--epochs", "1", "--limit-train", "100"]
    code, _, err = run(capsys, *argv, "--device", "cpu", "--no-progress", "--out", str(tmp_path / "r"))
    assert code == 0, err
    lines = err.splitlines()
    table = lines[lines.index(f"{folders['flat']}:") + 1 :]
    assert table[0].split() == ["class", "train", "val", "test"]
    rows = {}
    for line in table[1:12]:  # class names may hold spaces ("9_Ankle boot")
        name, *counts = line.rsplit(maxsplit=3)
        rows[name.strip()] = [int(n) for n in counts]
    config = _json(tmp_path / "r" / "config.json")
    sizes = [config["data_sizes"][split] for split in ("train", "val", "test")]
    assert sizes == [100, 200, 100]  # --limit-train; 20 % and 10 % of the 1,000 held out
    assert list(rows)[:10] == config["class_names"] and rows["total"] == sizes
    assert [sum(r[i] for name, r in rows.items() if name != "total") for i in range(3)] == sizes
