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


def test_every_figure_of_a_run_folder(tiny_run, fashion, tmp_path, capsys, monkeypatch, tile_cells):
    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import confusion_matrix

    import cnnkit.viz as viz
    from cnnkit.models import create_model

    drawn = {}  # the figure behind each file, for its layout (where each tile landed)
    save = viz.save_figure

    def keep(fig, path, dpi):
        drawn[path.name] = fig
        return save(fig, path, dpi)

    monkeypatch.setattr(viz, "save_figure", keep)
    _, test = fashion
    boot = tmp_path / "boot.png"
    Image.fromarray(test.images[0, 0].numpy()).save(boot)  # the first test image, as a file
    for figure, extra in (
        ("curves", []),
        ("filters", ["--vmax", "0.5", "--dpi", "200"]),
        ("histogram", ["--layer", "features.conv2"]),
        (
            "feature-maps",
            ["--image", boot, "--layer", "features.conv1", "--layer", "features.conv2", "--dpi", "300"],
        ),
        ("confusion", []),
        ("errors", ["--top", "8"]),
        ("gradcam", ["--image", boot, "--class", "Ankle boot"]),
    ):
        out_file = tmp_path / f"{figure}.png"
        code, out, err = run(capsys, "viz", figure, tiny_run.path, "--out", out_file, *extra)
        assert code == 0, err
        assert out.strip() == f"wrote {out_file}"
        assert Image.open(out_file).format == "PNG"
    # The files show the values: each tile's cells have the colour of their weight or activation,
    # computed here from the weights and by F.conv2d, mapped as the figures say (viridis; filters
    # on the fixed scale ±0.5, feature maps each from its own min to max).
    model = tiny_run.model
    weight = model.features.conv1.weight.detach()[:, 0]
    cells = tile_cells(tmp_path / "filters.png", drawn["filters.png"], 200)
    assert len(cells) == 32
    for k, shown in enumerate(cells):
        np.testing.assert_allclose(shown, viridis((weight[k].numpy() + 0.5) / 1.0), atol=2)
    x = test.images[0:1].float() / 255.0
    conv1 = F.relu(F.conv2d(x, model.features.conv1.weight, model.features.conv1.bias, padding=1))
    conv2 = F.relu(
        F.conv2d(F.max_pool2d(conv1, 2), model.features.conv2.weight, model.features.conv2.bias, padding=1)
    )
    expected = [*conv1[0].detach().numpy(), *conv2[0].detach().numpy()]
    cells = tile_cells(tmp_path / "feature-maps.png", drawn["feature-maps.png"], 300)[1:]  # after the input
    assert len(cells) == 32 + 64
    for maps, shown in zip(expected, cells):
        low, high = maps.min(), maps.max()
        colours = viridis((maps - low) / (high - low)) if high > low else viridis(np.zeros_like(maps))
        assert np.mean(np.abs(shown - colours) <= 2) > 0.99  # a cell on a colour-bin edge may round over
    # Histogram bars: numpy's histogram of the trained and the seeded fresh weights, on shared bins.
    torch.manual_seed(tiny_run.record["run"]["seed"])
    fresh = create_model("hongong_cnn").features.conv2.weight.detach().double().numpy()
    trained = model.features.conv2.weight.detach().double().numpy()
    edges = np.linspace(min(trained.min(), fresh.min()), max(trained.max(), fresh.max()), 31)
    for ax, values in zip(drawn["histogram.png"].axes[:2], (trained, fresh)):
        np.testing.assert_array_equal([p.get_height() for p in ax.patches], np.histogram(values, edges)[0])
    # Confusion counts: scikit-learn's, from the model's own predictions on the run's test set.
    with torch.no_grad():
        predicted = model(tiny_run.test.images.float() / 255.0).argmax(1)
    reference = confusion_matrix(tiny_run.test.labels.numpy(), predicted.numpy(), labels=range(10))
    counts = [ax for ax in drawn["confusion.png"].axes if ax.images][0]
    np.testing.assert_array_equal(counts.images[0].get_array(), reference)
    # Grad-CAM overlay: by hand at the last stage (pool2, the default) for "Ankle boot" (class 9),
    # as Selvaraju et al. define it and display it (scaled to [0, 1], bilinear to 28×28, rescaled).
    acts = {}
    hook = model.features.pool2.register_forward_hook(lambda m, i, o: acts.setdefault("A", o))
    score = model(x)[0, 9]
    hook.remove()
    (grads,) = torch.autograd.grad(score, acts["A"])
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * acts["A"]).sum(1))[0].detach()
    big = F.interpolate(unit_range(cam)[None, None], size=(28, 28), mode="bilinear", align_corners=False)
    overlay = drawn["gradcam.png"].axes[1].images[1]
    np.testing.assert_allclose(overlay.get_array(), unit_range(big[0, 0]).numpy(), atol=1e-5)
    plt.close("all")
    code, out, _ = run(capsys, "viz", "diagram", tiny_run.path)
    assert code == 0
    figures = tiny_run.path / "figures"
    assert out.split() == ["wrote", str(figures / "diagram.png"), "wrote", str(figures / "diagram.svg")]


def unit_range(t):
    t = t - t.min()
    return t / (t.max() + 1e-7)


def viridis(values: np.ndarray) -> np.ndarray:
    """RGB 0..255 of values in [0, 1] under matplotlib's viridis (values outside are clipped)."""
    from matplotlib import colormaps

    return colormaps["viridis"](np.clip(values, 0, 1))[..., :3] * 255


def test_a_model_name_draws_the_fresh_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "viz", "diagram", "resnet18", "--input", "32x32x3", "--out", "r.svg")
    assert code == 0, err
    assert "layer4.1.conv2 : Conv2d" in (tmp_path / "r.svg").read_text()
    code, out, _ = run(capsys, "viz", "histogram", "lenet5")
    assert code == 0 and (tmp_path / "lenet5-histogram-features-c1.png").is_file()
    # A deep model's feature maps without --layer: 8 of its 20 conv layers, and the command says so.
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    code, out, err = run(
        capsys, "viz", "feature-maps", "resnet18", "--image", "grey.png", "--max-maps", "1", "--out", "m.png"
    )
    assert code == 0, err
    assert "8 of resnet18's 20 conv layers, spread through the model (conv1 ... layer4.1.conv2)" in out
    assert (tmp_path / "m.png").is_file()


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
        (["viz", "feature-maps", "RUN", "--max-layers", "-1"], "--max-layers >= 0"),
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
