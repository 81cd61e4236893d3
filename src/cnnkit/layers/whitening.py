"""Patch whitening: a first convolution set from the training images instead of at random.

Neighbouring pixels are strongly correlated, so a randomly initialised first layer spends its
early training steps learning to undo that. Setting its filters to the principal directions of
the images' patches, each scaled to unit variance (ZCA-style whitening, Coates & Ng 2011),
gives the next layers decorrelated inputs from the first step: the fast preset reaches a given
accuracy in fewer epochs (docs/performance.md). The filters come in pairs, a direction and its
negative, so that a ReLU after them keeps both signs.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from .conv import Conv2D

WHITEN_IMAGES = 5_000  # patches of this many images estimate the covariance
WHITEN_EPS = 5e-4  # added to each direction's variance: noise directions are not blown up
MAX_POSITIONS = 1024  # patch positions per image; a larger image is read on a strided grid
# Patches read in all: at most this many multiply-adds for their covariance (patches × size²):
# 3×3 grayscale patches, all 676 positions of 5,000 28×28 images; 7×7 RGB ones, about 18,500.
COVARIANCE_WORK = 400_000_000
CHUNK_ELEMENTS = 8_000_000  # patch values unfolded at once


def patch_whitening(
    images: torch.Tensor, kernel_size: tuple[int, int], pairs: int, eps: float = WHITEN_EPS
) -> torch.Tensor:
    """Filters Tensor[2 * pairs, C, kh, kw] that whiten the images' kh×kw patches.

    The covariance of the images' C×kh×kw patches is split into its principal directions,
    largest variance first. The first ``pairs`` filters are the first ``pairs`` directions, each
    scaled by 1/sqrt(variance + eps); the next ``pairs`` are their negatives. Convolved with the
    images, the directions give uncorrelated outputs, each of variance variance / (variance +
    eps), just under 1.

    Small images give every patch position; larger ones a grid of about ``MAX_POSITIONS`` per
    image (a stride), and only as many images as keep the covariance under
    ``COVARIANCE_WORK`` multiply-adds, spread evenly over ``images``: a folder of 224-px photos
    costs a fraction of a second, not the hours all its patches would.

    Args:
        images: Tensor[N, C, H, W]: floats scaled as the model sees them, or uint8 (scaled to
            0..1 here, as the classifier scales them, one chunk at a time).
        kernel_size: (kh, kw) of the convolution.
        pairs: directions wanted, 1 to C·kh·kw.
        eps: added to every variance.

    Raises:
        ValueError: images that are not 4-D floats or uint8 at least as large as the kernel, a
            number of pairs out of range, or eps <= 0.
    """
    kh, kw = kernel_size
    if images.dim() != 4 or not (images.is_floating_point() or images.dtype == torch.uint8):
        raise ValueError(
            f"images must be a float or uint8 Tensor[N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    n, c, h, w = images.shape
    if n < 1 or h < kh or w < kw:
        raise ValueError(f"images {tuple(images.shape)} hold no {kh}x{kw} patch")
    dims = c * kh * kw
    if not 1 <= pairs <= dims:
        raise ValueError(
            f"{c}x{kh}x{kw} patches have {dims} directions: pairs must be 1 to {dims}, got {pairs}"
        )
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    stride = max(1, math.ceil(math.sqrt((h - kh + 1) * (w - kw + 1) / MAX_POSITIONS)))
    positions = ((h - kh) // stride + 1) * ((w - kw) // stride + 1)
    used = min(n, max(1, COVARIANCE_WORK // (dims * dims * positions)))
    if used < n:
        images = images[torch.linspace(0, n - 1, used).round().long()]
    chunk = max(1, min(500, CHUNK_ELEMENTS // (positions * dims)))  # a chunk's patches: <= 32 MB
    total = torch.zeros(dims, dtype=torch.float64)
    outer = torch.zeros(dims, dims, dtype=torch.float64)
    count = 0
    for start in range(0, used, chunk):
        x = images[start : start + chunk].cpu()
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        patches = nn.functional.unfold(x, (kh, kw), stride=stride)
        patches = patches.transpose(1, 2).reshape(-1, dims).double()
        total += patches.sum(0)
        outer += patches.T @ patches
        count += len(patches)
    mean = total / count
    cov = outer / count - torch.outer(mean, mean)
    variances, directions = torch.linalg.eigh(cov)  # ascending
    variances, directions = variances.flip(0)[:pairs].clamp_min(0), directions.flip(1)[:, :pairs]
    scaled = (directions / torch.sqrt(variances + eps)).T.reshape(pairs, c, kh, kw)
    return torch.cat([scaled, -scaled]).float()


def first_conv(model: nn.Module) -> nn.Module:
    """The model's first 2-D convolution (``nn.Conv2d`` or a ``Conv2D`` layer), in the order its
    modules were registered: the stem, in cnnkit's models and torchvision's.

    Raises:
        ValueError: the model has none.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, Conv2D)):
            return module
    raise ValueError(f"{type(model).__name__} has no 2-D convolution to whiten")


def whiten_first_conv(
    model: nn.Module,
    images: torch.Tensor,
    *,
    eps: float = WHITEN_EPS,
    max_images: int = WHITEN_IMAGES,
    freeze: bool = True,
) -> nn.Module:
    """Set the model's first convolution to :func:`patch_whitening` of ``images``, in place.

    Its first 2·p output channels become p whitening pairs, p = min(channels // 2, patch size
    C·kh·kw); channels beyond them (a 32-channel 3×3 convolution of grayscale images has 18
    whitening filters) keep their initial weights.

    Args:
        model: a built model whose first convolution is ungrouped and undilated.
        images: Tensor[N, C, H, W], floats scaled as the model sees them or uint8 (scaled to
            0..1); the first ``max_images`` estimate the patch covariance.
        freeze: keep the filters fixed while training (``requires_grad=False``); the layer's
            bias, if any, is zeroed and frozen with them.

    Returns:
        ``model``.

    Raises:
        ValueError: no convolution, a grouped, dilated or not yet built one, or images whose
            channels differ from its input channels.
    """
    conv = first_conv(model)
    weight = conv.weight
    if isinstance(weight, UninitializedParameter):
        raise ValueError(
            "the first convolution is not built yet: give it in_channels, or run one batch first"
        )
    groups = getattr(conv, "groups", 1)
    dilation = getattr(conv, "dilation", getattr(conv, "dilation_rate", (1, 1)))
    if groups != 1 or tuple(dilation) != (1, 1):
        raise ValueError(
            f"cannot whiten a grouped or dilated first convolution (groups={groups}, dilation={dilation})"
        )
    if images.dim() != 4 or images.shape[1] != weight.shape[1]:
        raise ValueError(
            f"the first convolution takes {weight.shape[1]} channel(s); images are {tuple(images.shape)}"
        )
    out, dims = weight.shape[0], weight[0].numel()
    pairs = min(out // 2, dims)
    if pairs < 1:
        raise ValueError(f"the first convolution has {out} output channel(s): whitening needs 2 or more")
    filters = patch_whitening(images[:max_images], tuple(weight.shape[2:]), pairs, eps)
    with torch.no_grad():
        weight[: len(filters)] = filters.to(weight.device, weight.dtype)
        if conv.bias is not None:
            conv.bias.zero_()
    if freeze:
        freeze_first_conv(model)
    return model


def freeze_first_conv(model: nn.Module) -> nn.Module:
    """Keep the model's first convolution (weights and bias) fixed: ``requires_grad=False``, as
    :func:`whiten_first_conv` leaves it; a whitened run's model rebuilt from its files gets it
    back this way, so its summary counts those weights as non-trainable."""
    conv = first_conv(model)
    for param in conv.parameters(recurse=False):
        param.requires_grad_(False)
    return model
