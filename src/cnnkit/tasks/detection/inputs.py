"""Images as the localization and detection models take them."""

from __future__ import annotations

import torch


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 Tensor[N, C, H, W] -> float Tensor[N, C, H, W] in 0..1 on ``device``, channels-last.

    Channels-last makes PyTorch's CPU convolutions and pooling about 1.5x faster here.
    """
    x = images.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)
