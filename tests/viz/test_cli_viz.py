"""`cnnkit viz` and `cnnkit report` end to end on a real run folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnkit.cli.__main__ import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_figure_of_a_run_folder(tiny_run, fashion, tmp_path, capsys):
    _, test = fashion
    boot = tmp_path / "boot.png"
    Image.fromarray(test.images[0, 0].numpy()).save(boot)  # the first test image, as a file
    for figure, extra in (
        ("curves", []),
        ("filters", ["--vmax", "0.5"]),
        ("histogram", ["--layer", "features.conv2"]),
        ("feature-maps", ["--image", boot, "--layer", "features.conv1", "--layer", "features.conv2"]),
        ("confusion", []),
        ("errors", ["--top", "8"]),
        ("gradcam", ["--image", boot, "--class", "Ankle boot"]),
    ):
        out_file = tmp_path / f"{figure}.png"
        code, out, err = run(capsys, "viz", figure, tiny_run.path, "--out", out_file, *extra)
        assert code == 0, err
        assert out.strip() == f"wrote {out_file}"
        image = Image.open(out_file)
        assert image.format == "PNG" and np.asarray(image.convert("L")).std() > 5  # not blank
    code, out, _ = run(capsys, "viz", "diagram", tiny_run.path)
    assert code == 0
    figures = tiny_run.path / "figures"
    assert out.split() == ["wrote", str(figures / "diagram.png"), "wrote", str(figures / "diagram.svg")]


def test_a_model_name_draws_the_fresh_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "viz", "diagram", "resnet18", "--input", "32x32x3", "--out", "r.svg")
    assert code == 0, err
    assert "layer4.1.conv2 : Conv2d" in (tmp_path / "r.svg").read_text()
    code, out, _ = run(capsys, "viz", "histogram", "lenet5")
    assert code == 0 and (tmp_path / "lenet5-histogram-features-c1.png").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["viz", "filters", "RUN", "--layer", "features.conv3"],
         "unknown layer 'features.conv3' (did you mean features.conv2"),
        (["viz", "feature-maps", "RUN", "--layer", "conv1"],
         "valid layers (as in `cnnkit summary`): features.conv1"),
        (["viz", "curves", "hongong_cnn"], "needs a run folder"),
        (["viz", "gradcam", "RUN", "--class", "boots"], "unknown class 'boots'"),
        (["viz", "filters", "RUN", "--out", "x.jpg"], "must end in .png or .svg"),
        (["viz", "histogram", "RUN", "--layer", "features.pool1"], "has no weights"),
        (["report", "RUN", "--index", "500"], "--index must be in 0..199"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_usage_errors(tiny_run, capsys, argv, message):
    argv = [str(tiny_run.path) if a == "RUN" else a for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1 and out == ""


def test_report_command_rewrites_the_page(tiny_run, tmp_path, capsys):
    target = tmp_path / "again.html"
    code, out, _ = run(capsys, "report", tiny_run.path, "--out", target, "--index", "3")
    assert code == 0 and out.strip() == f"wrote {target}"
    text = target.read_text(encoding="utf-8")
    assert text.count("<section") == 9
    label = tiny_run.test.class_names[int(tiny_run.test.labels[3])]
    assert f'<img alt="feature maps of test image 3 ({label})" src="data:image/png;base64,' in text


def test_untrained_draws_the_weights_training_started_from(tiny_run, tmp_path, capsys):
    import torch

    from cnnkit.models import create_model
    from cnnkit.viz import plot_filters, save_figure

    code, _, err = run(capsys, "viz", "filters", tiny_run.path, "--untrained", "--out", tmp_path / "u.png")
    assert code == 0, err
    torch.manual_seed(tiny_run.record["run"]["seed"])  # train_run seeds, then builds the model
    start = create_model("hongong_cnn")
    save_figure(plot_filters(start, "features.conv1"), tmp_path / "expected.png")
    assert not torch.equal(start.features.conv1.weight, tiny_run.model.features.conv1.weight)
    drawn = np.asarray(Image.open(tmp_path / "u.png"))
    assert np.array_equal(drawn, np.asarray(Image.open(tmp_path / "expected.png")))
    code, _, err = run(capsys, "viz", "histogram", tiny_run.path, "--untrained")
    assert code == 2 and "--untrained does not apply" in err
