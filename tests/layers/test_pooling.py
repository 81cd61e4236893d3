"""Pooling layers against the course's 4x4 worked example and NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnkit.layers import AvgPool2D, DepthMaxPool, GlobalAvgPool2D, MaxPool2D

EXAMPLE = torch.tensor([[1, 3, 2, 4], [5, 6, 1, 2], [7, 8, 9, 0], [3, 2, 1, 4]], dtype=torch.float32)


def test_course_4x4_max_and_average():
    x = EXAMPLE.view(1, 1, 4, 4)
    assert MaxPool2D(2)(x).view(2, 2).tolist() == [[6, 4], [8, 9]]
    assert AvgPool2D(2)(x).view(2, 2).tolist() == [[3.75, 2.25], [5.0, 3.5]]


def test_keras_defaults_stride_equals_pool_size_and_valid():
    x = torch.arange(49.0).view(1, 1, 7, 7)
    assert MaxPool2D(2)(x).shape[-2:] == (3, 3)
    assert MaxPool2D(2, padding="same")(x).shape[-2:] == (4, 4)
    assert MaxPool2D(3, strides=1)(x).shape[-2:] == (5, 5)


def test_same_max_pool_ignores_padding_even_for_negative_inputs():
    x = -torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    out = MaxPool2D(2, padding="same")(x)
    assert out.view(-1).tolist() == [-1.0, -3.0, -7.0, -9.0]


def test_same_average_pool_excludes_padded_cells():
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    out = AvgPool2D(2, padding="same")(x).view(-1).tolist()
    # Windows: [1,2,4,5], [3,6], [7,8], [9] — means over real cells only (Keras/TensorFlow).
    assert out == [3.0, 4.5, 7.5, 9.0]


def test_depth_max_pool_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 5, 4)).astype(np.float32)
    ref = x.reshape(2, 3, 2, 5, 4).max(axis=2)
    out = DepthMaxPool(2)(torch.from_numpy(x))
    np.testing.assert_array_equal(out.numpy(), ref)


def test_depth_max_pool_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="5 channels are not divisible by pool_size=2"):
        DepthMaxPool(2)(torch.zeros(1, 5, 3, 3))


def test_global_average_pool_is_mean_per_map():
    x = torch.randn(3, 8, 5, 7)
    np.testing.assert_allclose(
        GlobalAvgPool2D()(x).numpy(), x.numpy().mean(axis=(2, 3)), rtol=1e-5, atol=1e-6
    )
    assert GlobalAvgPool2D(keepdims=True)(x).shape == (3, 8, 1, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 5, 8, 6), (2, 4, 7, 9), (1, 1, 2, 3), (4, 32, 28, 28), (2, 3, 2, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_2x2_max_pool_equals_torch_max_pool(dtype, shape, channels_last):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    x[0, 0, 0, 0] = float("nan")  # NaN wins the max, as in F.max_pool2d
    x[-1, -1, 0, :] = float("-inf")  # a row of -inf loses to the row below it
    x[-1, 0, -2:, -2:] = 0.5  # a window of ties
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    pool = MaxPool2D(2)
    with torch.inference_mode():
        fast = pool(x)
    ref = torch.nn.functional.max_pool2d(x, 2)
    assert fast.shape == ref.shape and fast.dtype == ref.dtype
    assert torch.equal(fast.nan_to_num(-1.0), ref.nan_to_num(-1.0))
    assert fast.isnan().equal(ref.isnan())
    if channels_last and min(ref.shape[-2:]) > 1:
        assert fast.is_contiguous(memory_format=torch.channels_last)


def test_max_pool_backward_still_routes_the_gradient_to_one_cell_per_window():
    x = torch.tensor([[[[1.0, 5.0], [5.0, 2.0]]]], requires_grad=True)  # a tie: 5 twice
    MaxPool2D(2)(x).sum().backward()
    assert x.grad.sum().item() == 1.0 and sorted(x.grad.flatten().tolist()) == [0.0, 0.0, 0.0, 1.0]


def test_max_pool_refuses_a_map_smaller_than_the_window_with_or_without_grad():
    x = torch.zeros(1, 1, 1, 3)
    with pytest.raises(RuntimeError, match="too small"):
        MaxPool2D(2)(x.requires_grad_())
    with torch.inference_mode(), pytest.raises(RuntimeError, match="too small"):
        MaxPool2D(2)(torch.zeros(1, 1, 1, 3))
