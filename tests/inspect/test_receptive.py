"""Receptive fields against the published table (Araujo et al., Distill 2019) and, pixel by
pixel, against the input pixels whose gradient reaches one output pixel of a linear network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.inspect.receptive import layer_windows, window_of
from cnnkit.layers import Conv2D, MaxPool2D
from cnnkit.models import create_model

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many tiny ops: see tests/conftest.py


@pytest.mark.parametrize(
    ("name", "shape", "published"),
    [
        # layer -> (receptive field, jump): VGG-16 conv5_3 (with its ReLU) and pool5; AlexNet pool5
        ("vgg16", (3, 32, 32), {"features.29": (196, 16), "features.30": (212, 32)}),
        ("alexnet_tv", (3, 224, 224), {"features.12": (195, 32)}),
    ],
)
def test_published_receptive_fields(name, shape, published):
    windows = layer_windows(create_model(name).eval(), shape)
    for layer, (field, jump) in published.items():
        assert windows[layer].field == (field, field) and windows[layer].jump == (jump, jump)


def test_resnet18_follows_the_widest_branch():
    windows = layer_windows(create_model("resnet18").eval(), (3, 64, 64))
    # By hand: conv1 7 (jump 2), maxpool +2*2, layer1 +4*2*4, layer2 +2*4 + 3*2*8, layer3 +2*8 + 3*2*16,
    # layer4 +2*16 + 3*2*32 = 435 (the residual sums follow the 3x3 path, not the 1x1 shortcut).
    assert windows["layer4.1.bn2"].field == (435, 435)
    assert windows["layer4.1.bn2"].jump == (32, 32)


def _gradient_box(x: torch.Tensor, out: torch.Tensor, row: int, col: int) -> tuple[int, int, int, int]:
    (grad,) = torch.autograd.grad(out[0, 0, row, col], x, retain_graph=True)
    rows = torch.nonzero(grad[0].abs().sum(0).sum(1)).flatten()
    cols = torch.nonzero(grad[0].abs().sum(0).sum(0)).flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def test_boxes_match_the_gradient_of_a_linear_network():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Conv2d(2, 2, 5, stride=2, padding=2),
        Conv2D(2, 3, padding="same", dilation_rate=2, in_channels=2),
        nn.Conv2d(2, 2, (3, 1), stride=(1, 2), padding=(0, 1)),
        Conv2D(2, 2, strides=2, padding="same", in_channels=2),
    ).eval()
    for module in model.modules():  # all weights positive: every tap in a window counts
        if isinstance(getattr(module, "weight", None), torch.Tensor):
            nn.init.uniform_(module.weight, 0.5, 1.0)
    shape = (1, 61, 67)
    windows = layer_windows(model, shape)
    last = windows["5"]
    x = torch.ones(1, *shape, requires_grad=True)
    out = model(x)
    _, _, height, width = out.shape
    for row in range(height):
        for col in range(width):
            top, left, bottom, right = last.box(row, col)
            clipped = (max(0, top), max(0, left), min(shape[1] - 1, bottom), min(shape[2] - 1, right))
            assert _gradient_box(x, out, row, col) == clipped, (row, col)
    assert last.field[0] != last.field[1]  # the (3, 1) kernel made rows and columns differ


def test_window_of_reads_keras_and_torch_layers():
    same = window_of(Conv2D(4, 3, strides=2, padding="same", in_channels=1), 28, 28)
    # TF 'same' on 28 with k=3, s=2: output 14, total pad 1, the extra zero after the last row.
    assert same.kernel == (3, 3) and same.stride == (2, 2) and same.pad == (0, 0)
    assert window_of(MaxPool2D(2), 28, 28).stride == (2, 2)
    pool = window_of(nn.MaxPool2d(3, stride=2, padding=1, dilation=2), 10, 10)
    assert (pool.kernel, pool.stride, pool.dilation, pool.pad) == ((3, 3), (2, 2), (2, 2), (1, 1))
    assert pool.span(0) == 5
    assert window_of(nn.ReLU(), 5, 5) is None and window_of(nn.Linear(3, 3), 5, 5) is None
