"""Grad-CAM and gradient saliency: a hand computation, finite differences, and a model trained to
find Fashion-MNIST items placed in two quadrants of a larger canvas."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import UsageError
from cnnkit.viz import grad_cam, gradient_saliency, plot_saliency, saliency, to_model_input
from cnnkit.viz.gradcam import resolve_class

TARGETS = (1, 3, 7, 8)  # trouser, dress, sneaker, bag
SIDE = 14  # items are shrunk to 14×14 and pasted into quadrants of a 28×28 canvas


def two_item_canvases(data, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Each canvas holds two items of different TARGETS classes in two different quadrants.

    Returns:
        (canvases Tensor[n, 1, 28, 28] in [0, 1], multi-hot labels Tensor[n, 4],
        per canvas [(class, quadrant), (class, quadrant)] with quadrants 0..3 row-major).
    """
    gen = torch.Generator().manual_seed(seed)
    pools = [torch.nonzero(data.labels == c).flatten() for c in TARGETS]
    canvases = torch.zeros(n, 1, 2 * SIDE, 2 * SIDE)
    labels = torch.zeros(n, len(TARGETS))
    where = []
    for k in range(n):
        classes = torch.randperm(len(TARGETS), generator=gen)[:2].tolist()
        quadrants = torch.randperm(4, generator=gen)[:2].tolist()
        for c, q in zip(classes, quadrants):
            pick = pools[c][torch.randint(len(pools[c]), (1,), generator=gen)]
            row, col = divmod(q, 2)
            item = F.avg_pool2d(data.images[pick].float() / 255.0, 2)[0]
            canvases[k, :, row * SIDE : (row + 1) * SIDE, col * SIDE : (col + 1) * SIDE] = item
            labels[k, c] = 1
        where.append(list(zip(classes, quadrants)))
    return canvases, labels, where


def small_gap_cnn() -> nn.Module:
    # Global average pooling: the classifier cannot tell where an item is, so whatever
    # localisation Grad-CAM shows comes from the conv features, not from a position-aware head.
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, len(TARGETS)),
    )  # fmt: skip


@pytest.fixture(scope="module")
def finder(fashion):
    """(trained model, untrained model, test canvases, [(class, quadrant)] per canvas).

    Trained to say which two of the four classes a canvas holds (multi-label): 2,000 canvases
    of real items, 6 epochs, a few seconds on one core.
    """
    train, test = fashion
    x, y, _ = two_item_canvases(train, 2000, seed=0)
    torch.manual_seed(0)
    model, untrained = small_gap_cnn(), small_gap_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        for batch in torch.randperm(len(x), generator=gen).split(32):
            loss = F.binary_cross_entropy_with_logits(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    xt, _, where = two_item_canvases(test, 24, seed=1)
    return model.eval(), untrained.eval(), xt, where


def peak_hits(model: nn.Module, canvases: torch.Tensor, where: list) -> int:
    """How many (canvas, class) explanations peak in the quadrant holding that class's item."""
    hits = 0
    for canvas, items in zip(canvases, where):
        for cls, quadrant in items:
            cam = grad_cam(model, canvas, cls)  # default layer: the last conv layer ("6")
            assert cam.shape == (28, 28) and cam.min() >= 0 and cam.max() <= 1
            row, col = np.unravel_index(cam.argmax(), cam.shape)
            hits += (row // SIDE) * 2 + col // SIDE == quadrant
    return hits


def test_grad_cam_of_each_class_peaks_on_that_class_item(finder):
    model, untrained, xt, where = finder
    total = 2 * len(xt)
    hits = peak_hits(model, xt, where)
    # Two items per canvas: pointing at the right one takes knowing which is which.
    assert hits >= 0.75 * total, f"Grad-CAM found the item for only {hits} of {total} explanations"
    assert peak_hits(untrained, xt, where) <= 0.5 * total  # not an artefact of where the ink is


def unit_range(t: torch.Tensor) -> torch.Tensor:
    t = t - t.min()
    return t / (t.max() + 1e-7)


def test_grad_cam_matches_a_hand_computation(finder):
    model, _, xt, _ = finder
    x = xt[3:4]
    for target in range(len(TARGETS)):
        # By hand: A = output of the last conv's ReLU (module "6"), w_k = mean of d score / d A_k,
        # cam = relu(sum_k w_k A_k), scaled to [0, 1], bilinearly resized to the input and
        # scaled to [0, 1] again (as Selvaraju et al. display it; the package does the same).
        acts = model[:7](x)
        score = model[7:](acts)[0, target]
        (grads,) = torch.autograd.grad(score, acts)
        cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1))[0].detach()
        big = F.interpolate(unit_range(cam)[None, None], size=(28, 28), mode="bilinear", align_corners=False)
        expected = unit_range(big[0, 0])
        np.testing.assert_allclose(grad_cam(model, x, target, layer="6"), expected.numpy(), atol=1e-5)


def test_gradient_saliency_matches_finite_differences(finder):
    model, _, xt, _ = finder
    # A little noise breaks the ties of max pooling over the flat background, where the
    # function has a kink and one-sided differences disagree with any gradient.
    noise = torch.rand(xt[0].shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = xt[0].double() + 0.01 * noise
    model64 = copy.deepcopy(model).double()  # float64: finite differences need the precision
    sal, target = gradient_saliency(model64, x, target=2)
    assert target == 2 and sal.shape == (28, 28)
    h = 1e-6
    for r, c in ((3, 4), (10, 20), (20, 9), (27, 27), (14, 14)):
        up, down = x.clone(), x.clone()
        up[0, r, c] += h
        down[0, r, c] -= h
        with torch.no_grad():
            slope = (model64(up[None])[0, 2] - model64(down[None])[0, 2]) / (2 * h)
        assert sal[r, c] == pytest.approx(abs(float(slope)), rel=1e-4, abs=1e-8)


def test_saliency_figure_overlays_the_cam_and_defaults_to_the_last_stage(tiny_run, fashion):
    _, test = fashion
    image = test.images[0]
    result = saliency(tiny_run.model, to_model_input(image))
    assert result.layer == "features.pool2"  # the last feature_info stage of hongong_cnn
    assert result.target == int(result.probs.argmax())
    assert result.cam.shape == result.gradient.shape == (28, 28)
    fig = plot_saliency(image, result, tiny_run.test.class_names, true_label=9)
    overlay_ax = fig.axes[1]
    np.testing.assert_array_equal(overlay_ax.images[1].get_array(), result.cam)
    np.testing.assert_array_equal(fig.axes[2].images[0].get_array(), result.gradient)
    assert "Ankle boot" in fig.axes[0].get_title()


def test_bad_layers_and_classes_are_usage_errors(tiny_run):
    x = torch.zeros(1, 1, 28, 28)
    with pytest.raises(UsageError, match="valid layers"):
        grad_cam(tiny_run.model, x, 0, layer="features.conv9")
    with pytest.raises(UsageError, match=r"\[N, C, H, W\]"):
        grad_cam(tiny_run.model, x, 0, layer="head.dense1")
    names = tiny_run.test.class_names
    assert resolve_class("ankle boot", names, 10) == 9
    assert resolve_class("3", names, 10) == 3
    with pytest.raises(UsageError, match="classes: T-shirt/top, Trouser"):
        resolve_class("boots", names, 10)
    with pytest.raises(UsageError, match=r"0\.\.9"):
        resolve_class(10, names, 10)
