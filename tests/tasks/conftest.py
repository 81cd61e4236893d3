"""Fixtures shared by the task tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.engine.perf import pick_num_threads


@pytest.fixture(scope="module")
def free_cores():
    """Torch on the cores other processes leave free (on a shared machine, OpenMP threads waiting
    for busy cores stall every op; see cnnkit.engine.perf), restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(pick_num_threads())
    yield
    torch.set_num_threads(before)


def _with_bn_statistics(model: nn.Module, negative_scale: bool = False) -> nn.Module:
    """Non-trivial BatchNorm running statistics and affine terms, as after training."""
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=gen) + 0.2)
            module.bias.data.copy_(torch.rand(c, generator=gen) - 0.5)
            if negative_scale:
                module.weight.data[0] = -0.7
    return model.eval()


@pytest.fixture(scope="session")
def with_bn_statistics():
    """``f(model, negative_scale=False)``: the model with non-trivial BatchNorm statistics and
    affine terms, as after training, in eval mode."""
    return _with_bn_statistics
