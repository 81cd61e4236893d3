"""Saliency: Grad-CAM (Selvaraju et al., 2017) and plain gradient saliency (Simonyan et al., 2014).

Grad-CAM weights each channel of a layer's output A by the spatial mean of the gradient of the
class score, ``w_k = mean_ij d y_c / d A_k[i, j]``, keeps the positive part of ``sum_k w_k A_k``,
scales it to [0, 1] and resizes it (bilinear) to the input size. The computation is the
maintained ``grad-cam`` package's (``pytorch_grad_cam.GradCAM``); this module picks the layer
by its summary name, defaults it to the model's last stage and draws the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..errors import UsageError
from ..inspect.features import default_cam_layer, get_layer
from ._common import class_label, display_image, fixed_margins, model_device

__all__ = ["Saliency", "grad_cam", "gradient_saliency", "plot_saliency", "resolve_class", "saliency"]


@dataclass
class Saliency:
    """Grad-CAM and gradient saliency of one image for one class.

    Attributes:
        cam: float32 [H, W] in [0, 1], the Grad-CAM heat map at input resolution.
        gradient: float32 [H, W] >= 0, max over channels of |d score / d pixel|.
        layer: the layer Grad-CAM looked at.
        target: the class explained.
        probs: float32 [num_classes] softmax of the model's output for the image.
    """

    cam: np.ndarray
    gradient: np.ndarray
    layer: str
    target: int
    probs: np.ndarray


def resolve_class(
    target: int | str | None, class_names: Sequence[str] | None, num_classes: int
) -> int | None:
    """A class index from an index, a numeric string or a class name (None stays None).

    Raises:
        UsageError: an index out of range or an unknown name (listing the names).
    """
    if target is None:
        return None
    if isinstance(target, str) and not target.strip().lstrip("-").isdigit():
        names = list(class_names or [])
        lowered = [n.lower() for n in names]
        if target.lower() in lowered:
            return lowered.index(target.lower())
        raise UsageError(f"unknown class {target!r}; classes: {', '.join(names) or f'0..{num_classes - 1}'}")
    index = int(target)
    if not 0 <= index < num_classes:
        raise UsageError(f"class index must be in 0..{num_classes - 1}, got {index}")
    return index


def _batch(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x if x.dim() == 4 else x.unsqueeze(0)
    if x.shape[0] != 1:
        raise ValueError(f"saliency explains one image at a time, got a batch of {x.shape[0]}")
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
    return x.detach().to(device=model_device(model), dtype=dtype)


def grad_cam(
    model: nn.Module, x: torch.Tensor, target: int | None = None, layer: str | None = None
) -> np.ndarray:
    """Grad-CAM heat map of one image.

    Args:
        model: a classifier returning logits Tensor[1, num_classes].
        x (Tensor[1, C, H, W] or Tensor[C, H, W]): the prepared image.
        target: class to explain (default: the predicted class).
        layer: layer name (default: the last ``feature_info`` stage, else the last conv layer).

    Returns:
        float32 [H, W] in [0, 1] (all zeros when no location speaks for the class).

    Raises:
        UsageError: an unknown layer, or one whose output the class score does not depend on.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = layer or default_cam_layer(model)
    module = get_layer(model, layer)
    x = _batch(model, x)
    was_training = model.training
    cam = GradCAM(model=model, target_layers=[module])  # puts the model in eval mode
    try:
        targets = None if target is None else [ClassifierOutputTarget(int(target))]
        with torch.enable_grad():
            heat = cam(input_tensor=x, targets=targets)
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        acts = cam.activations_and_grads.activations
        if not acts:
            raise UsageError(
                f"layer {layer!r} did not run in the forward pass of {type(model).__name__}"
            ) from None
        if acts[0].dim() != 4:
            raise UsageError(
                f"Grad-CAM needs a layer with [N, C, H, W] output; {layer!r} gives {tuple(acts[0].shape)}"
            ) from None
        if not cam.activations_and_grads.gradients:
            raise UsageError(
                f"the class score does not depend on the output of layer {layer!r}; choose a later layer"
            ) from None
        raise exc
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return np.asarray(heat[0], dtype=np.float32)


def gradient_saliency(model: nn.Module, x: torch.Tensor, target: int | None = None) -> tuple[np.ndarray, int]:
    """Plain gradient saliency: ``max_c |d score_target / d x[c, i, j]|``.

    Args:
        model: a classifier returning logits Tensor[1, num_classes].
        x (Tensor[1, C, H, W] or Tensor[C, H, W]): the prepared image.
        target: class to explain (default: the predicted class).

    Returns:
        (saliency float32 [H, W], the class explained).
    """
    x = _batch(model, x).requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x)
            target = int(logits.argmax(1)[0]) if target is None else int(target)
            (grad,) = torch.autograd.grad(logits[0, target], x)
    finally:
        model.train(was_training)
    return grad[0].abs().amax(dim=0).cpu().numpy().astype(np.float32), target


def saliency(
    model: nn.Module, x: torch.Tensor, target: int | None = None, layer: str | None = None
) -> Saliency:
    """Grad-CAM and gradient saliency of one image for ``target`` (default: the predicted class)."""
    with torch.no_grad():
        was_training = model.training
        model.eval()
        probs = torch.softmax(model(_batch(model, x)).float(), dim=1)[0].cpu().numpy()
        model.train(was_training)
    target = int(probs.argmax()) if target is None else int(target)
    layer = layer or default_cam_layer(model)
    cam = grad_cam(model, x, target, layer)
    gradient, _ = gradient_saliency(model, x, target)
    return Saliency(cam, gradient, layer, target, probs)


def plot_saliency(
    image: torch.Tensor,
    result: Saliency,
    class_names: Sequence[str] | None = None,
    true_label: int | None = None,
) -> Figure:
    """Input, Grad-CAM overlaid on it, and gradient saliency, side by side.

    Args:
        image (Tensor[C, H, W]): the image as stored (uint8) or prepared.
        result: from :func:`saliency`.
        class_names: label names.
        true_label: shown in the title when known.

    Returns:
        Figure with three axes; ``axes[1].images[1].get_array()`` is ``result.cam``.
    """
    shown = display_image(image)
    cmap = "gray_r" if shown.ndim == 2 else None
    # The label first: a Korean name sets up its font before the axes (and their titles) exist.
    heading = "input" if true_label is None else f"input (true: {class_label(true_label, class_names)})"
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    fixed_margins(fig, left=0.1, right=0.1, bottom=0.1, top=0.75, wspace=0.25)
    axes[0].imshow(shown, cmap=cmap)
    axes[0].set_title(heading, fontsize=9)
    axes[1].imshow(shown, cmap=cmap)
    overlay = axes[1].imshow(result.cam, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
    axes[1].set_title(f"Grad-CAM at {result.layer}", fontsize=9)
    fig.colorbar(overlay, ax=axes[1], shrink=0.8)
    grad = axes[2].imshow(result.gradient, cmap="hot")
    axes[2].set_title("gradient saliency |d score / d pixel|", fontsize=9)
    fig.colorbar(grad, ax=axes[2], shrink=0.8)
    for ax in axes:
        ax.axis("off")
    name = class_label(result.target, class_names)
    fig.suptitle(
        f"explaining class {name!r} (p = {result.probs[result.target]:.1%}; predicted "
        f"{class_label(int(result.probs.argmax()), class_names)!r})",
        fontsize=10,
    )
    return fig
