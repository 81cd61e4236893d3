"""Helpers shared by the figures: saving, embedding, model inputs, predictions."""

from __future__ import annotations

import base64
import io
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "ipykernel" not in sys.modules:  # notebooks keep their inline figures; elsewhere files only
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

# No "Software: matplotlib ... https://..." text chunk, no dates: files are reproducible and a
# report built from them holds no URL at all.
_PNG_METADATA: dict[str, Any] = {"Software": None}
_SVG_METADATA: dict[str, Any] = {"Date": None, "Creator": None, "Format": None, "Type": None}


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: float = 100) -> Path:
    """Write ``fig`` as PNG or SVG (by the file extension) and return the path.

    Raises:
        ValueError: an extension other than .png or .svg.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"figure files must end in .png or .svg, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = _PNG_METADATA if suffix == ".png" else _SVG_METADATA
    fig.savefig(path, dpi=dpi, metadata=metadata)
    return path


def figure_png_base64(fig: Figure, dpi: float = 90) -> str:
    """The figure as a base64 PNG (for ``<img src="data:image/png;base64,...">``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata=_PNG_METADATA)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def close(fig: Figure) -> None:
    plt.close(fig)


def fixed_margins(
    fig: Figure,
    left: float,
    right: float,
    bottom: float,
    top: float,
    wspace: float = 0.2,
    hspace: float = 0.2,
) -> None:
    """Margins in inches, applied once: much faster to render than constrained layout."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wspace,
        hspace=hspace,
    )


def grid_shape(n: int, ncols: int) -> tuple[int, int]:
    """(rows, cols) of a grid holding ``n`` tiles at most ``ncols`` wide."""
    cols = max(1, min(ncols, n))
    return math.ceil(n / cols), cols


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def to_model_input(
    images: torch.Tensor, normalize: Any = None, device: torch.device | None = None
) -> torch.Tensor:
    """uint8 images the way the Trainer feeds them: scaled to [0, 1], then (x - mean) / std.

    Args:
        images (Tensor[N, C, H, W] or Tensor[C, H, W]): uint8 pixels, or floats taken as prepared.
        normalize: None, (mean, std) or {"mean": [...], "std": [...]} per channel on [0, 1].
        device: where the result goes (default: where ``images`` are).

    Returns:
        Tensor[N, C, H, W] float32.
    """
    x = images if images.dim() == 4 else images.unsqueeze(0)
    x = x.to(device) if device is not None else x
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    if normalize is not None:
        mean, std = (normalize["mean"], normalize["std"]) if isinstance(normalize, dict) else normalize
        x = (x - torch.as_tensor(mean, device=x.device).view(1, -1, 1, 1)) / torch.as_tensor(
            std, device=x.device
        ).view(1, -1, 1, 1)
    return x


def display_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """An image for ``imshow``: [H, W] for one channel, [H, W, 3] in [0, 1] for colour.

    Args:
        image: uint8 or float Tensor[C, H, W] (or [H, W]); floats are min-max scaled.
    """
    x = torch.as_tensor(image).detach().cpu()
    if x.dim() == 2:
        x = x.unsqueeze(0)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.dtype.is_floating_point and (x.min() < 0 or x.max() > 1):
        x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    if x.shape[0] == 1:
        return x[0].numpy()
    return x[:3].permute(1, 2, 0).numpy()


@torch.no_grad()
def predict_proba(
    model: nn.Module, images: torch.Tensor, normalize: Any = None, batch_size: int = 256
) -> torch.Tensor:
    """Softmax probabilities Tensor[N, num_classes] on the CPU for uint8 images Tensor[N, C, H, W]."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    outs = []
    try:
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start : start + batch_size], normalize, device)
            outs.append(torch.softmax(model(x).float(), dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def class_label(index: int, class_names: Sequence[str] | None) -> str:
    """The name of class ``index`` as a figure shows it (in ``CNNKIT_LANG``, see ``viz.lang``)."""
    if class_names and 0 <= index < len(class_names):
        from .lang import figure_names

        return figure_names([class_names[index]])[0]
    return str(index)
