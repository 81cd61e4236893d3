"""Filter grids and weight histograms, checked against the weights themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnkit.errors import UsageError
from cnnkit.models import create_model
from cnnkit.viz import filter_tiles, plot_filters, plot_weight_histograms, weight_stats


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


@pytest.mark.parametrize("layer", ["features.conv1", "features.conv2"])
def test_filter_grid_has_one_tile_per_output_channel_on_one_symmetric_scale(tiny_run, layer):
    weight = dict(tiny_run.model.named_modules())[layer].weight.detach()
    fig = plot_filters(tiny_run.model, layer, in_channel=0)
    axes = image_axes(fig)
    assert len(axes) == weight.shape[0]  # 32 for conv1, 64 for conv2
    scale = float(weight.abs().max())
    for k, ax in enumerate(axes):
        image = ax.images[0]
        assert image.get_clim() == pytest.approx((-scale, scale))
        np.testing.assert_allclose(image.get_array(), weight[k, 0].numpy(), rtol=0, atol=0)


def test_course_scale_and_another_input_channel(tiny_run):
    weight = tiny_run.model.features.conv2.weight.detach()
    fig = plot_filters(tiny_run.model, "features.conv2", in_channel=5, vmax=0.5)
    axes = image_axes(fig)
    assert all(ax.images[0].get_clim() == (-0.5, 0.5) for ax in axes)
    np.testing.assert_array_equal(axes[63].images[0].get_array(), weight[63, 5].numpy())


def test_three_channel_first_layer_is_drawn_in_colour():
    model = create_model("hongong_cnn", in_chans=3)
    weight = model.features.conv1.weight.detach()
    fig = plot_filters(model)  # default: the first conv layer
    axes = image_axes(fig)
    assert len(axes) == 32
    scale = float(weight.abs().max())
    # Independent mapping: weight 0 is mid-gray, ±scale are the ends of [0, 1], per RGB channel.
    expected = np.clip(0.5 + weight[7].permute(1, 2, 0).numpy() / (2 * scale), 0, 1)
    shown = np.asarray(axes[7].images[0].get_array())
    assert shown.shape == (3, 3, 3)
    np.testing.assert_allclose(shown, expected, atol=1e-6)
    tiles, _ = filter_tiles(torch.zeros(2, 3, 3, 3), vmax=1.0)
    assert np.all(tiles == 0.5)


def test_filter_errors_name_the_problem(tiny_run):
    with pytest.raises(UsageError, match="no weights; layers with weights: features.conv1"):
        plot_filters(tiny_run.model, "features.pool1")
    with pytest.raises(UsageError, match=r"--channel must be in 0\.\.0"):
        plot_filters(tiny_run.model, "features.conv1", in_channel=3)
    with pytest.raises(UsageError, match="conv kernel"):
        plot_filters(tiny_run.model, "head.dense1")


def test_trained_and_fresh_histograms_differ_and_print_the_course_statistics(tiny_run):
    torch.manual_seed(tiny_run.record["run"]["seed"])
    fresh = create_model("hongong_cnn")
    trained_w = tiny_run.model.features.conv1.weight.detach()
    fresh_w = fresh.features.conv1.weight.detach()
    fig = plot_weight_histograms({"trained": trained_w, "freshly initialised": fresh_w}, "features.conv1")
    left, right = fig.axes[:2]
    counts_left = np.array([p.get_height() for p in left.patches])
    counts_right = np.array([p.get_height() for p in right.patches])
    assert counts_left.sum() == counts_right.sum() == 288  # 3 × 3 × 1 × 32 weights
    assert not np.array_equal(counts_left, counts_right)
    # The bins are shared, so the bars can be compared one by one; they match numpy's histogram.
    low, high = float(min(trained_w.min(), fresh_w.min())), float(max(trained_w.max(), fresh_w.max()))
    edges = np.linspace(low, high, 31)
    np.testing.assert_array_equal(counts_left, np.histogram(trained_w.double().numpy(), edges)[0])
    stats = weight_stats(trained_w)
    values = trained_w.double().numpy()
    assert stats["mean"] == pytest.approx(values.mean()) and stats["std"] == pytest.approx(values.std())
    assert f"mean {stats['mean']:.4g}, std {stats['std']:.4g}" in left.get_title()
    assert weight_stats(fresh_w)["std"] != pytest.approx(stats["std"], rel=1e-6)
