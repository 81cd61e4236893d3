"""The public API as the README shows it: ``from cnnkit import ...`` and the version."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import cnnkit
from cnnkit.cli.__main__ import main


def test_readme_names_import_from_the_top():
    from cnnkit import Trainer, create_model, decode_predictions, load_fashion_mnist, summary

    assert summary(create_model("hongong_cnn"), "28x28x1").total_params == 333_526  # 혼공머신 ch. 8
    assert Trainer.__name__ == "ClassifyTrainer" and callable(load_fashion_mnist)
    probs = torch.tensor([[0.1, 0.7, 0.2]])
    top = decode_predictions(probs, top=2, class_names=["a", "b", "c"])[0]
    assert [(p.name, round(p.probability, 3)) for p in top] == [("b", 0.7), ("c", 0.2)]
    assert set(cnnkit.__all__) >= {"Trainer", "create_model", "summary", "decode_predictions", "__version__"}


def test_version_is_the_package_version(capsys):
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert cnnkit.__version__ == declared
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"cnnkit {declared}"
