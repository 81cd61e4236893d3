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
    "localize": None,  # tests/conftest.py trains it once per session (the studio's tests read it too)
    "detect": ["train", "--task", "detect", "--head-width", "16", "--anchors", "2", "--max-objects", "2",
               *TINY_SCENES],
    "segment": ["train", "--task", "segment", "--head", "fcn8s", *TINY_SCENES],
    "maskrcnn": None,  # likewise
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
def runs(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("runs")
    folders = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNKIT_CACHE", str(root / "cache"))
        for kind, argv in TRAIN.items():
            if argv is None:
                folders[kind] = request.getfixturevalue(f"{kind}_run_dir")
                continue
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
    (["evaluate", "{run}", "--cascade"], ("localize", "detect", "segment")),
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


EXPORTED = ("classify", "finetune", "localize", "detect", "segment")


@pytest.mark.parametrize("kind", EXPORTED)
def test_export_onnx_matches_the_run_on_its_own_test_images(runs, kind, tmp_path, capsys):
    import numpy as np
    import onnxruntime
    import torch
    from PIL import Image

    from cnnkit.export import resolve_source
    from cnnkit.runs.folder import load_run

    out = tmp_path / "model.onnx"
    capsys.readouterr()
    assert main(["export", str(runs[kind]), "--out", str(out), "--check-images", "200", "--json"]) == 0
    parity = json.loads(capsys.readouterr().out)["parity"]
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-4 and parity["agreement"] >= 0.999
    # Independently of cnnkit's runtime: ONNX Runtime itself against the run's model, at batch 3
    # (exported at batch 2: the batch axis is dynamic).
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["cnnkit"])
    record = json.loads((runs[kind] / "config.json").read_text())
    assert meta["class_names"] == record["class_names"] and meta["opset"] == 18
    recorded = _get(json.loads((runs[kind] / "metrics.json").read_text()), SCORE[kind][0])
    assert meta["test_metric"]["value"] == pytest.approx(recorded)
    model, _ = load_run(runs[kind], "cpu")
    source = resolve_source(str(runs[kind]), limit=3)
    x = source.inputs()
    assert len(x) == min(3, len(source.images)) > 0
    # `cnnkit predict` runs the file of any task; the commands for runs name it.
    image = tmp_path / "test.png"
    Image.fromarray(source.images[0].permute(1, 2, 0).squeeze(-1).numpy()).save(image)
    assert main(["predict", str(out), str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"] == str(image)
    assert main(["evaluate", str(out)]) == 2
    assert "`cnnkit predict" in capsys.readouterr().err
    with torch.inference_mode():
        expected = model(x)
    ours = session.run(None, {"images": x.numpy()})
    if kind == "detect":
        expected = model.decode(expected)[0]  # the boxes before clipping agree where not clipped
        inside = ((expected >= 0) & (expected <= x.shape[-1])).numpy()
        np.testing.assert_allclose(ours[0][inside], expected.numpy()[inside], atol=1e-4)
    else:
        expected = expected if isinstance(expected, tuple) else (expected,)
        for got, want in zip(ours, expected):
            np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


def test_export_pt2_of_a_run_loads_with_torch_export(runs, tmp_path, capsys):
    import torch

    from cnnkit.export import resolve_source
    from cnnkit.runs.folder import load_run

    out = tmp_path / "model.pt2"
    assert main(["export", str(runs["classify"]), "--format", "pt2", "--out", str(out)]) == 0
    assert "max abs diff" in capsys.readouterr().out
    extra = {"cnnkit.json": ""}
    program = torch.export.load(out, extra_files=extra)
    assert json.loads(extra["cnnkit.json"])["task"] == "classify"
    x = resolve_source(str(runs["classify"]), limit=5).inputs()
    model, _ = load_run(runs["classify"], "cpu")
    with torch.inference_mode():
        torch.testing.assert_close(program.module()(x)[0], model(x), atol=1e-5, rtol=0)


def test_export_refuses_a_mask_rcnn_run_in_one_line(runs, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(runs["maskrcnn"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Mask R-CNN does not export" in err
    assert not out.exists()
