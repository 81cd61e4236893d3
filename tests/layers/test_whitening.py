"""Patch whitening of the first convolution, checked against NumPy on real Fashion-MNIST images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_images
from torch import nn

from cnnkit import create_model
from cnnkit.layers import Conv2D
from cnnkit.layers.whitening import WHITEN_EPS, first_conv, patch_whitening, whiten_first_conv
from cnnkit.tasks.classify.task import ClassifyTrainer


@pytest.fixture(scope="module")
def images(fashion_small) -> torch.Tensor:
    return fashion_small[0].images[:300].float() / 255.0  # as the classifier scales them


def _numpy_patches(images: torch.Tensor, k: int) -> np.ndarray:
    """Every k×k patch inside the images, one row each, by plain NumPy slicing."""
    x = images.numpy().astype(np.float64)[:, 0]
    n, h, w = x.shape
    rows = [x[:, i : i + k, j : j + k].reshape(n, -1) for i in range(h - k + 1) for j in range(w - k + 1)]
    return np.concatenate(rows)


def test_filters_are_the_principal_directions_scaled_to_unit_variance(images):
    patches = _numpy_patches(images, 3)
    variances, directions = np.linalg.eigh(np.cov(patches, rowvar=False, bias=True))
    variances, directions = variances[::-1], directions[:, ::-1]
    filters = patch_whitening(images, (3, 3), 8).double().reshape(16, 9).numpy()
    assert np.array_equal(filters[8:], -filters[:8])  # each direction and its negative
    for i in range(8):  # the direction, up to its sign, scaled by 1/sqrt(variance + eps)
        expected = directions[:, i] / np.sqrt(variances[i] + WHITEN_EPS)
        sign = np.sign(filters[i] @ expected)
        np.testing.assert_allclose(filters[i], sign * expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # Applied to the patches: uncorrelated outputs of variance var / (var + eps), just under 1.
    out = (patches - patches.mean(0)) @ filters[:8].T
    cov = out.T @ out / len(out)
    np.testing.assert_allclose(np.diag(cov), variances[:8] / (variances[:8] + WHITEN_EPS), rtol=1e-4)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-5
    assert 0.9 < np.diag(cov).min() <= np.diag(cov).max() < 1.0


def test_uint8_images_are_scaled_as_the_classifier_scales_them(fashion_small):
    raw = fashion_small[0].images[:300]
    assert torch.equal(patch_whitening(raw, (3, 3), 8), patch_whitening(raw.float() / 255.0, (3, 3), 8))


def test_large_photos_are_read_on_a_strided_grid_that_numpy_reproduces():
    # The course's two sample photos, 427×640 RGB, under a 7×7 first layer (ResNet's stem): every
    # position would be 2 × 267,000 patches of 147 values; a stride of 17 reads 2 × 950.
    photos = np.stack(load_sample_images().images)  # [2, 427, 640, 3] uint8
    images = torch.from_numpy(photos).permute(0, 3, 1, 2).contiguous()
    filters = patch_whitening(images, (7, 7), 8).double().reshape(16, -1).numpy()
    x = photos.transpose(0, 3, 1, 2).astype(np.float64) / 255.0
    patches = np.concatenate(
        [x[:, :, i : i + 7, j : j + 7].reshape(2, -1) for i in range(0, 421, 17) for j in range(0, 634, 17)]
    )
    assert patches.shape == (2 * 25 * 38, 147)
    variances = np.linalg.eigvalsh(np.cov(patches, rowvar=False, bias=True))[::-1][:8]
    out = (patches - patches.mean(0)) @ filters[:8].T
    cov = out.T @ out / len(out)
    np.testing.assert_allclose(np.diag(cov), variances / (variances + WHITEN_EPS), rtol=1e-4)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-5


def test_the_preset_model_gets_frozen_whitening_filters_that_training_keeps(images, fashion_small):
    torch.manual_seed(0)
    model = create_model("fashion_bn_cnn", widths=[16, 48], hidden=128, pool_first=True)
    others = {name: p.detach().clone() for name, p in model.named_parameters() if "stage1" not in name}
    assert whiten_first_conv(model, images) is model
    conv = first_conv(model)
    assert isinstance(conv, Conv2D) and conv is model.features.stage1[0]
    assert torch.equal(conv.weight, patch_whitening(images, (3, 3), 8)) and not conv.weight.requires_grad
    before = conv.weight.detach().clone()
    trainer = ClassifyTrainer(model, optimizer="sgd", lr=0.1)
    trainer.fit(fashion_small[0].subset(slice(0, 256)), epochs=1, batch_size=64, verbose=0)
    assert torch.equal(conv.weight, before)  # frozen
    changed = [
        name for name, p in model.named_parameters() if name in others and not torch.equal(p, others[name])
    ]
    assert len(changed) == len(others)  # every other weight trained


def test_more_channels_than_directions_keep_their_initial_weights(images):
    torch.manual_seed(0)
    model = create_model("hongong_cnn")  # the course CNN: 32 filters of 3×3 on grayscale
    start = first_conv(model).weight.detach().clone()
    whiten_first_conv(model, images, freeze=False)
    weight = first_conv(model).weight
    assert torch.equal(weight[:18], patch_whitening(images, (3, 3), 9))  # all 9 directions, ±
    assert torch.equal(weight[18:], start[18:]) and weight.requires_grad


def test_a_torch_conv2d_with_bias_is_whitened_and_its_bias_zeroed(images):
    model = nn.Sequential(nn.Conv2d(1, 4, 2, bias=True), nn.ReLU())
    whiten_first_conv(model, images)
    assert torch.equal(model[0].weight, patch_whitening(images, (2, 2), 2))
    assert not model[0].bias.any() and not model[0].bias.requires_grad


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (nn.Sequential(nn.Linear(4, 2)), None, "has no 2-D convolution"),
        (nn.Sequential(nn.Conv2d(2, 4, 3, groups=2)), (1, 2, 8, 8), "grouped or dilated"),
        (nn.Sequential(nn.Conv2d(1, 4, 3, dilation=2)), None, "grouped or dilated"),
        (nn.Sequential(nn.Conv2d(3, 4, 3)), None, "takes 3 channel"),
        (nn.Sequential(nn.Conv2d(1, 1, 3)), None, "2 or more"),
        (nn.Sequential(Conv2D(8, 3)), None, "not built yet"),
    ],
)
def test_models_that_cannot_be_whitened_are_refused_by_name(model, data, message, images):
    x = images if data is None else torch.rand(data)
    with pytest.raises(ValueError, match=message):
        whiten_first_conv(model, x)


def test_bad_images_and_settings_are_refused(images):
    with pytest.raises(ValueError, match="float or uint8 Tensor"):
        patch_whitening((images * 255).long(), (3, 3), 4)
    with pytest.raises(ValueError, match="hold no 3x3 patch"):
        patch_whitening(images[:, :, :2, :2], (3, 3), 4)
    with pytest.raises(ValueError, match="pairs must be 1 to 9"):
        patch_whitening(images, (3, 3), 10)
    with pytest.raises(ValueError, match="eps must be > 0"):
        patch_whitening(images, (3, 3), 4, eps=0.0)
