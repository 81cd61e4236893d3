"""Every command on every run: tiny runs of each task, re-scored, reported, and refused in one line.

The runs train for one epoch on a few real Fashion-MNIST items (FashionScenes for the scene
tasks); what is checked is that each command reads the run folder through the one run reader.
"""

from __future__ import annotations

import json

import pytest

from cnnkit.cli.__main__ import main

TINY_SCENES = ["--canvas", "32", "--item-sizes", "12,24", "--train-images", "16", "--limit-test", "4",
               "--epochs", "1", "--batch-size", "8", "--no-progress"]  # fmt: skip
TRAIN = {
    "classify": ["train", "--model", "hongong_cnn", "--epochs", "1", "--limit-train", "120",
                 "--limit-test", "40", "--batch-size", "32", "--no-progress"],
    "localize": ["train", "--task", "localize", "--head-width", "16", *TINY_SCENES],
    "detect": ["train", "--task", "detect", "--head-width", "16", "--anchors", "2", "--max-objects", "2",
               *TINY_SCENES],
    "segment": ["train", "--task", "segment", "--head", "fcn8s", *TINY_SCENES],
    "maskrcnn": ["train", "--task", "segment", "--head", "maskrcnn", "--model", "hongong_cnn", *TINY_SCENES],
    # started from the classification run above
    "finetune": ["finetune", "--weights", "{classify}", "--data", "fashion-mnist", "--limit-train", "120",
                 "--limit-test", "40", "--head-epochs", "1", "--full-epochs", "1", "--no-progress"],
}  # fmt: skip
TASK_OF = {"maskrcnn": "segment"}
# The test score each task writes to metrics.json, and where `cnnkit evaluate --json` puts it.
SCORE = {
    "classify": (("test_accuracy",), ("accuracy",)),
    "localize": (("test", "mean_iou"), ("mean_iou",)),
    "detect": (("test", "map_50"), ("map_50",)),
    "segment": (("test_miou",), ("miou",)),
    "maskrcnn": (("test_segm_map",), ("segm", "map")),
    "finetune": (("test_accuracy",), ("accuracy",)),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    folders = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNKIT_CACHE", str(root / "cache"))
        for kind, argv in TRAIN.items():
            folders[kind] = root / kind
            argv = [a.replace("{classify}", str(folders.get("classify", ""))) for a in argv]
            assert main([*argv, "--out", str(folders[kind])]) == 0, kind
    return folders


def _get(data, path):
    for key in path:
        data = data[key]
    return data


@pytest.mark.parametrize("kind", list(TRAIN))
def test_evaluate_rescores_the_run_on_its_own_test_set(runs, kind, capsys):
    run = runs[kind]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    recorded = _get(json.loads((run / "metrics.json").read_text()), SCORE[kind][0])
    assert _get(report, SCORE[kind][1]) == pytest.approx(recorded, abs=1e-6)
    assert "test" in json.dumps(report.get("test_set", "test"))


@pytest.mark.parametrize("kind", list(TRAIN))
def test_report_writes_a_page_for_every_run(runs, kind, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(runs[kind]), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'id="metrics"' in page and 'id="curves"' in page
    assert f"({TASK_OF.get(kind, kind)})" in page  # the title names the task


REFUSED = [
    # (command, kinds it refuses)
    (["predict", "{run}", "x.png"], ("localize", "detect", "segment", "maskrcnn")),
    (["detect", "{run}", "x.png"], ("classify", "segment", "maskrcnn")),
    (["segment", "{run}", "x.png"], ("classify", "localize", "detect")),
    (["viz", "gradcam", "{run}"], ("localize", "detect", "segment", "maskrcnn")),
    (["viz", "confusion", "{run}"], ("localize", "detect", "segment", "maskrcnn")),
    (["finetune", "--weights", "{run}", "--data", "fashion-mnist"], ("localize", "detect", "segment")),
    (["evaluate", "{run}", "--int8"], ("localize", "detect", "segment")),
    (["train", "--resume", "{run}"], ("finetune",)),
    (["finetune", "--resume", "{run}"], ("classify", "detect")),
]


@pytest.mark.parametrize("argv,kinds", REFUSED, ids=[" ".join(a[:2]) for a, _ in REFUSED])
def test_other_commands_refuse_in_one_line_naming_the_task(runs, argv, kinds, capsys):
    for kind in kinds:
        capsys.readouterr()
        code = main([a.replace("{run}", str(runs[kind])) for a in argv])
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, kind, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert f"a {TASK_OF.get(kind, kind)} run" in err, err


def test_the_shipped_model_works_where_a_run_does(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "fashion", "--limit-test", "300", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_samples"] == 300 and report["accuracy"] > 0.85  # the asset scores 91.05 % on all
    assert main(["viz", "filters", "fashion"]) == 0
    assert main(["report", "fashion"]) == 0
    assert (tmp_path / "runs" / "fashion" / "report.html").is_file()
