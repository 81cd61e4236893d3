"""Squeeze-and-excitation: the SENet block (Hu et al. 2018) that reweights feature maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_positive_int


class SqueezeExcite(nn.Module):
    """Scale every feature map by a gate in (0, 1) computed from the means of all maps.

    The course's three layers: global average pooling ("squeeze"), a ReLU dense layer with
    ``channels // reduction`` units, and a sigmoid dense layer with ``channels`` units
    ("excitation"); the input is multiplied by that recalibration vector.

    Args:
        channels: feature maps in (and out).
        reduction: how much narrower the hidden layer is than ``channels``.

    Shape:
        input (Tensor[N, C, H, W]) -> output (Tensor[N, C, H, W]).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        if not isinstance(reduction, int) or not 1 <= reduction <= channels:
            raise ValueError(f"reduction must be an int in [1, {channels}], got {reduction!r}")
        self.channels = channels
        hidden = channels // reduction
        self.fc_reduce = nn.Linear(channels, hidden)
        self.fc_expand = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            expected = f"Tensor[N, {self.channels}, H, W]"
            raise ValueError(f"SqueezeExcite expects {expected}, got shape {tuple(x.shape)}")
        squeezed = x.mean(dim=(2, 3))
        gate = torch.sigmoid(self.fc_expand(F.relu(self.fc_reduce(squeezed))))
        return x * gate[:, :, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.fc_reduce.out_features}"
