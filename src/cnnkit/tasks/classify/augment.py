"""Augmentation on whole batch tensors, on the device the batch is on.

Per-sample transforms (torchvision's ``RandomHorizontalFlip`` on PIL images or single tensors)
cost a Python call per image; here one batch is one or two tensor operations. Random numbers
come from the global torch generator (on the CPU, then moved), so a seeded run repeats and the
Trainer's checkpoint RNG state covers them.
"""

from __future__ import annotations

import torch
from torch import nn


def random_flip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``.

    Args:
        x: Tensor[N, C, H, W] (any memory format).

    Returns:
        Tensor[N, C, H, W]: each row is exactly ``x[i]`` or ``x[i].flip(-1)``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be between 0 and 1, got {p!r}")
    if p == 0.0 or len(x) == 0:
        return x
    flip = (torch.rand(len(x)) < p).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def _check_pixels(value: object, what: str) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be an int >= 0, got {value!r}")


def _unchanged(x: torch.Tensor, pixels: int, what: str) -> bool:
    """Whether a transform of ``pixels`` (checked) leaves the batch ``x`` as it is."""
    _check_pixels(pixels, what)
    return pixels == 0 or len(x) == 0


def random_translate(x: torch.Tensor, max_shift: int = 2, fill: float = 0.0) -> torch.Tensor:
    """Shift each image by its own random whole-pixel offset in [-max_shift, max_shift]².

    Pixels shifted in from outside are ``fill`` (0 = black background for Fashion-MNIST).

    Args:
        x: Tensor[N, C, H, W].

    Returns:
        Tensor[N, C, H, W] in the memory format of ``x``.
    """
    if _unchanged(x, max_shift, "max_shift"):
        return x
    n, _, h, w = x.shape
    s = max_shift
    padded = nn.functional.pad(x, (s, s, s, s), value=fill)
    shifts = torch.randint(0, 2 * s + 1, (2, n)).to(x.device)
    rows = (torch.arange(h, device=x.device).view(1, h) + shifts[0].view(n, 1)).view(n, h, 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + shifts[1].view(n, 1)).view(n, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    # Advanced indexing gives [N, H, W, C]; permuting back is free and leaves channels-last data.
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if x.is_contiguous(memory_format=torch.channels_last):
        return out
    return out.contiguous()


def random_cutout(x: torch.Tensor, size: int, fill: float = 0.0) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017): set a ``size``×``size`` square of each image to ``fill``.

    Each image gets its own square, centred on a pixel drawn uniformly from the whole image and
    clipped at the border (so squares near an edge are smaller). torchvision's ``RandomErasing``
    draws one region per call, which on a batch tensor erases the same place in every image.

    Args:
        x: Tensor[N, C, H, W] (any memory format).
        size: the side of the square in pixels (0: no cutout).

    Returns:
        A new Tensor[N, C, H, W] (``x`` itself if ``size`` is 0), in the memory format of ``x``.
    """
    if _unchanged(x, size, "cutout size"):
        return x
    n, _, h, w = x.shape
    centre = torch.stack([torch.randint(0, h, (n,)), torch.randint(0, w, (n,))]).to(x.device)
    top_left = (centre - size // 2).view(2, n, 1)
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= top_left[0]) & (rows < top_left[0] + size)  # [N, H]
    in_cols = (cols >= top_left[1]) & (cols < top_left[1] + size)  # [N, W]
    mask = (in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w)).expand_as(x)
    return x.masked_fill(mask, fill)


class FlipTranslate:
    """Random flip, then random translation, then (optionally) cutout: the speed presets'
    augmentation.

    Args:
        max_shift: largest shift in pixels along each axis.
        flip_p: probability of a left-right flip.
        cutout: side in pixels of the square :func:`random_cutout` blanks in each image (0: none).
    """

    def __init__(self, max_shift: int = 2, flip_p: float = 0.5, cutout: int = 0) -> None:
        _check_pixels(max_shift, "max_shift")
        _check_pixels(cutout, "cutout")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be between 0 and 1, got {flip_p!r}")
        self.max_shift = max_shift
        self.flip_p = flip_p
        self.cutout = cutout

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return random_cutout(random_translate(random_flip(x, self.flip_p), self.max_shift), self.cutout)

    def __repr__(self) -> str:
        return f"FlipTranslate(max_shift={self.max_shift}, flip_p={self.flip_p}, cutout={self.cutout})"


def flip_tta(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: the mean of the logits for ``x`` and for its mirror image.

    Args:
        x: Tensor[N, C, H, W].

    Returns:
        Tensor[N, K]: ``(model(x) + model(x.flip(-1))) / 2``, computed as one batch of 2N.
    """
    both = model(torch.cat([x, x.flip(-1)]))
    return (both[: len(x)] + both[len(x) :]) / 2


# One-pixel shifts (rows, columns) of the "shift" test-time augmentation.
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
TTA_MODES = ("flip", "shift")


def shift_tta(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation over ten views: ``x`` and its mirror, each as it is and shifted by
    one pixel up, down, left and right (zeros shifted in, as ``random_translate`` fills).

    Args:
        x: Tensor[N, C, H, W].

    Returns:
        Tensor[N, K]: the mean of the ten views' logits, computed as one batch of 10N.
    """
    n, _, h, w = x.shape
    padded = nn.functional.pad(torch.cat([x, x.flip(-1)]), (1, 1, 1, 1))
    views = [padded[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in TTA_SHIFTS]
    batch = torch.cat(views)
    if x.is_contiguous(memory_format=torch.channels_last):
        batch = batch.contiguous(memory_format=torch.channels_last)
    out = model(batch)
    return out.view(len(views) * 2, n, -1).mean(0)


def tta_function(tta: bool | str | None):
    """The test-time augmentation ``fn(model, x)`` a ClassifyTask's ``tta`` names (None: none).

    ``True`` and ``"flip"``: :func:`flip_tta`; ``"shift"``: :func:`shift_tta`; ``False`` or
    ``None``: none.

    Raises:
        ValueError: any other value.
    """
    if tta is None or tta is False:
        return None
    if tta is True or tta == "flip":
        return flip_tta
    if tta == "shift":
        return shift_tta
    raise ValueError(f"tta must be True, False or one of {TTA_MODES}, got {tta!r}")
