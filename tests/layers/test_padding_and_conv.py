"""Conv2D and the padding math against the course's worked examples and F.conv2d."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnkit.layers import Conv2D, conv_output_size, same_padding


def to_nchw(shape_nhwc):
    n, h, w, c = shape_nhwc
    return (n, c, h, w)


@pytest.mark.parametrize(
    ("padding", "strides", "expected_nhwc"),
    [
        ("valid", 1, (2, 64, 114, 32)),  # Géron ch. 14: Conv2D(32, 7) on (2, 70, 120, 3)
        ("same", 1, (2, 70, 120, 32)),
        ("same", 2, (2, 35, 60, 32)),
    ],
)
def test_course_conv_shapes(padding, strides, expected_nhwc):
    images = torch.rand(to_nchw((2, 70, 120, 3)))
    conv = Conv2D(32, 7, strides=strides, padding=padding)
    assert tuple(conv(images).shape) == to_nchw(expected_nhwc)
    assert conv.in_channels == 3  # inferred from the first batch, like Keras


def test_course_39x31_walkthrough():
    # The (39, 31, 1) walk-through of course note 04: conv 4x4 -> pool 2 -> conv 3x3 -> pool 2
    # -> conv 3x3 -> pool 2 -> conv 2x2, all 'valid' with stride 1.
    steps = [
        (4, 1, (36, 28)),
        (2, 2, (18, 14)),
        (3, 1, (16, 12)),
        (2, 2, (8, 6)),
        (3, 1, (6, 4)),
        (2, 2, (3, 2)),
        (2, 1, (2, 1)),
    ]
    h, w = 39, 31
    for kernel, stride, expected in steps:
        h, w = conv_output_size(h, kernel, stride), conv_output_size(w, kernel, stride)
        assert (h, w) == expected
    # The same walk through real layers gives the same shapes; the note counts weights
    # without biases (4*4*1*20 = 320); with biases Keras reports 340.
    net = torch.nn.Sequential(
        Conv2D(20, 4, in_channels=1),
        torch.nn.MaxPool2d(2),
        Conv2D(40, 3, in_channels=20),
        torch.nn.MaxPool2d(2),
        Conv2D(60, 3, in_channels=40),
        torch.nn.MaxPool2d(2),
        Conv2D(80, 2, in_channels=60),
    )
    assert tuple(net(torch.zeros(1, 1, 39, 31)).shape) == (1, 80, 2, 1)
    assert net[0].weight.numel() == 320 and net[2].weight.numel() == 7200
    assert net[4].weight.numel() == 21600 and net[6].weight.numel() == 19200


def test_output_size_formula_matches_pytorch():
    for size in range(5, 40, 3):
        for k in (1, 2, 3, 5):
            for s in (1, 2, 3):
                for p in (0, 1, 2):
                    for d in (1, 2):
                        if size + 2 * p < d * (k - 1) + 1:
                            continue
                        out = F.conv2d(
                            torch.zeros(1, 1, size, size),
                            torch.zeros(1, 1, k, k),
                            stride=s,
                            padding=p,
                            dilation=d,
                        )
                        assert conv_output_size(size, k, s, p, d) == out.shape[-1]


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("size", [(7, 10), (8, 9)])
def test_same_matches_explicit_pad_then_conv(kernel, stride, size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    conv = Conv2D(4, kernel, strides=stride, padding="same", in_channels=3)
    h, w = size
    # TensorFlow's rule, computed independently: total padding, extra pixel at the end.
    pads = []
    for n in (h, w):
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads.append((total // 2, total - total // 2))
    ref = F.conv2d(F.pad(x, (pads[1][0], pads[1][1], pads[0][0], pads[0][1])), conv.weight, conv.bias, stride)
    out = conv(x)
    assert out.shape[-2:] == (math.ceil(h / stride), math.ceil(w / stride))
    torch.testing.assert_close(out, ref)


def test_same_padding_not_cached_across_sizes():
    conv = Conv2D(2, 3, strides=2, padding="same", in_channels=1)
    assert conv(torch.zeros(1, 1, 224, 224)).shape[-1] == 112
    assert conv(torch.zeros(1, 1, 225, 225)).shape[-1] == 113


def test_same_padding_puts_extra_at_end():
    assert same_padding(6, 2, 2) == (0, 0)
    assert same_padding(5, 2, 1) == (0, 1)
    assert same_padding(7, 4, 1) == (1, 2)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="'full'"):
        Conv2D(8, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2D(8, "3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not fit"):
        conv_output_size(3, 5)
    with pytest.raises(ValueError, match="4-D"):
        Conv2D(8, 3, in_channels=1)(torch.zeros(3, 28, 28))


def test_a_channels_last_batch_is_refused_with_the_permute_that_fixes_it():
    """Keras' NHWC [N, 28, 28, 1] would build a 28-channel convolution of 28×1 images."""
    x = torch.rand(2, 28, 28, 1)
    with pytest.raises(
        ValueError, match=r"shape \(2, 28, 28, 1\), which looks channels-last .*permute\(0, 3, 1, 2\)"
    ):
        Conv2D(8, 3, padding="same")(x)
    conv = Conv2D(8, 3, padding="same")
    assert conv(x.permute(0, 3, 1, 2)).shape == (2, 8, 28, 28) and conv.in_channels == 1
    assert Conv2D(8, 1)(torch.rand(2, 4, 8, 3)).shape == (2, 8, 8, 3)  # few channels: NCHW as given


def test_keras_initializers_statistics():
    conv = Conv2D(256, 3, kernel_initializer="he_normal", in_channels=128)
    std = math.sqrt(2 / (3 * 3 * 128))
    assert conv.weight.std().item() == pytest.approx(std, rel=0.05)
    # Keras draws from a normal of std / 0.8796 cut at two of *its* standard deviations, so the
    # truncated distribution has exactly the He standard deviation.
    assert conv.weight.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-6
    glorot = Conv2D(64, 3, in_channels=32)
    limit = math.sqrt(6 / (3 * 3 * 32 + 3 * 3 * 64))
    assert glorot.weight.abs().max().item() <= limit
    assert glorot.weight.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.05)
    assert torch.count_nonzero(glorot.bias) == 0


@pytest.mark.parametrize("bad", [0, -2, 2.0, True, "8"])
def test_sizes_must_be_positive_ints_in_every_layer(bad):
    from cnnkit.layers import Dense, DepthMaxPool, SqueezeExcite

    for build, name in (
        (lambda: Conv2D(bad, 3), "filters"),
        (lambda: Dense(bad), "units"),
        (lambda: SqueezeExcite(bad), "channels"),
        (lambda: DepthMaxPool(bad), "pool_size"),
        (lambda: conv_output_size(bad, 3), "size"),
    ):
        with pytest.raises(ValueError, match=f"{name} must be a positive int, got {bad!r}"):
            build()


def test_a_model_fresh_from_create_model_compiles_and_matches_eager():
    # Layers sized at construction used to keep LazyModuleMixin's first-batch hook until their
    # first forward; torch.compile, tracing a hook that removes itself, failed with IndexError.
    from cnnkit import create_model

    torch.manual_seed(0)
    model = create_model("hongong_cnn").eval()  # never called before compiling
    x = torch.rand(4, 1, 28, 28)
    compiled = torch.compile(model, backend="eager")(x)
    eager = model(x)
    assert torch.equal(compiled, eager)
    grads = []
    for run in (torch.compile(model, backend="eager"), model):
        model.zero_grad()
        run(x).logsumexp(1).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    # A layer left to size itself from the first batch still does so under torch.compile.
    lazy = Conv2D(8, 3)
    assert tuple(torch.compile(lazy, backend="eager")(x).shape) == (4, 8, 26, 26) and lazy.in_channels == 1
