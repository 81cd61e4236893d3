"""cnnkit.runtime: an exported model predicts with ONNX Runtime, NumPy and Pillow only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.cli.__main__ import main

SRC = Path(__file__).parents[2] / "src"
NO_TORCH = """
import json, sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
sys.modules["torchvision"] = None
from cnnkit.runtime import OnnxModel
model = OnnxModel(sys.argv[1])
found = [{"top": [[k, name, p] for k, name, p in pred.top]} for pred in model.predict(sys.argv[2:])]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision") and sys.modules[m])
print(json.dumps({"predictions": found, "torch_modules": loaded}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory, fashion, fashion_onnx):
    """The shipped course model as ONNX, and four real test items (one as a 3× larger RGB photo)."""
    root = tmp_path_factory.mktemp("runtime")
    _, test = fashion
    files = []
    for i in range(3):
        files.append(root / f"item{i}.png")
        Image.fromarray(test.images[i, 0].numpy()).save(files[-1])
    big = Image.fromarray(test.images[3, 0].numpy()).resize((84, 84)).convert("RGB")
    files.append(root / "item3.jpg")
    big.save(files[-1], quality=95)
    return fashion_onnx, files


def _without_torch(code: str, *args: object) -> subprocess.CompletedProcess:
    """``code`` run in a new interpreter (this checkout's cnnkit first on the path) with ``args``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, timeout=120
    )


def test_predict_runs_where_importing_torch_fails(exported, capsys):
    path, files = exported
    proc = _without_torch(NO_TORCH, path, *files)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["torch_modules"] == []
    # The reference: `cnnkit predict fashion` (PyTorch, the shipped weights) on the same files.
    capsys.readouterr()
    assert main(["predict", "fashion", *map(str, files), "--json"]) == 0
    reference = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for ours, theirs in zip(result["predictions"], reference):
        assert [t[1] for t in ours["top"]] == [t["class"] for t in theirs["top"]]
        np.testing.assert_allclose(
            [t[2] for t in ours["top"]], [t["probability"] for t in theirs["top"]], atol=1e-5
        )


CLI_NO_TORCH = """
import sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
sys.modules["torchvision"] = None
from cnnkit.cli.__main__ import process_main
sys.argv = ["cnnkit", "predict", *sys.argv[1:], "--top", "3"]
sys.exit(process_main())
"""


def test_the_command_line_predicts_with_an_onnx_file_where_importing_torch_fails(exported, capsys):
    """`cnnkit predict model.onnx IMAGE...` with ONNX Runtime alone prints what PyTorch prints."""
    path, files = exported
    proc = _without_torch(CLI_NO_TORCH, path, *files)
    assert proc.returncode == 0, proc.stderr
    capsys.readouterr()
    assert main(["predict", "fashion", *map(str, files), "--top", "3"]) == 0
    assert proc.stdout == capsys.readouterr().out


def test_predict_on_an_onnx_file_prints_what_predict_on_the_model_prints(exported, capsys):
    path, files = exported
    capsys.readouterr()
    assert main(["predict", str(path), *map(str, files), "--top", "3"]) == 0
    from_onnx = capsys.readouterr().out
    assert main(["predict", "fashion", *map(str, files), "--top", "3"]) == 0
    assert from_onnx == capsys.readouterr().out


def test_a_file_without_cnnkit_metadata_needs_classes_and_preprocess(exported, tmp_path, fashion, capsys):
    import onnx

    path, files = exported
    plain = onnx.load(str(path))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    assert main(["predict", str(tmp_path / "plain.onnx"), str(files[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no cnnkit metadata" in err
    assert "--classes" in err and "--preprocess" in err
    names = tmp_path / "names.txt"
    names.write_text("\n".join(fashion[1].class_names) + "\n", encoding="utf-8")
    args = ["predict", str(tmp_path / "plain.onnx"), str(files[0]), "--classes", str(names), "--top", "1"]
    assert main([*args, "--preprocess", "unit"]) == 0
    label = fashion[1].class_names[int(fashion[1].labels[0])]
    assert label in capsys.readouterr().out  # the first test item, an ankle boot, recognised


def test_numpy_nms_keeps_what_torchvision_keeps():
    from torchvision.ops import batched_nms, nms

    from cnnkit.runtime.boxes import batched_nms as np_batched_nms
    from cnnkit.runtime.boxes import nms as np_nms

    rng = np.random.default_rng(0)
    for _ in range(20):
        corners = rng.uniform(0, 60, (80, 2)).astype(np.float32)
        boxes = np.concatenate([corners, corners + rng.uniform(4, 30, (80, 2)).astype(np.float32)], 1)
        scores = rng.permutation(80).astype(np.float32) / 80  # distinct: one right order
        labels = rng.integers(0, 3, 80)
        t = torch.from_numpy
        assert np_nms(boxes, scores, 0.5).tolist() == nms(t(boxes), t(scores), 0.5).tolist()
        ours = np_batched_nms(boxes, scores, labels, 0.4).tolist()
        assert ours == batched_nms(t(boxes), t(scores), t(labels), 0.4).tolist()
