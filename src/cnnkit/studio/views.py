"""What the studio's page shows, computed for one model and one input as JSON-ready dicts.

Pictures travel as raw 8-bit grids in base64 (``"u8"``) with the value range they were scaled
from, and the page paints them on canvases: no image encoding on the server, a few kB per layer
of a small model.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..inspect.features import capture_outputs, conv_layer_names, default_cam_layer, get_layer
from ..viz.filters import filter_tiles, layer_weight, weight_stats
from .catalog import Entry
from .inputs import Input
from .overlays import SCENE_TASKS, scene_view

__all__ = [
    "feature_maps",
    "gradcam",
    "history",
    "pixel",
    "predict",
    "u8",
    "weights",
]

MAX_TILES = 256  # feature maps sent per layer (the rest are counted, not sent)
MAX_SLICES = 16  # kernel slices shown for one output pixel (the sum uses them all)
HIST_BINS = 40


def u8(values: np.ndarray | torch.Tensor, low: float | None = None, high: float | None = None) -> dict:
    """An array scaled to 0..255 over [low, high] (default: its own range), as base64 bytes."""
    a = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    a = a.astype(np.float64)
    lo = float(np.nanmin(a)) if low is None else low
    hi = float(np.nanmax(a)) if high is None else high
    scaled = np.zeros(a.shape) if hi <= lo else (a - lo) / (hi - lo) * 255
    scaled = np.nan_to_num(scaled, nan=0.0)
    data = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return {"shape": list(a.shape), "min": lo, "max": hi, "u8": base64.b64encode(data.tobytes()).decode()}


def _forward(entry: Entry, x: torch.Tensor) -> torch.Tensor:
    with entry.busy(), torch.inference_mode():
        out = entry.model(x)
    return out if isinstance(out, torch.Tensor) else torch.as_tensor([])


def predict(entry: Entry, item: Input, top: int = 5) -> dict[str, Any]:
    """Top-``top`` classes with softmax probabilities, and the input as the model sees it; for
    localization, detection and segmentation runs their boxes and masks on the photo instead."""
    result: dict[str, Any] = {"input_id": item.id, "pixels": u8(item.pixels, 0, 255), "top": []}
    if entry.task in SCENE_TASKS:  # boxes and masks on the photo, in its own pixels
        result.update(scene_view(entry, item))
        return result
    logits = _forward(entry, item.tensor)
    probs = torch.softmax(logits.float(), dim=1)[0]
    values, indices = probs.topk(min(top, probs.numel()))
    result["top"] = [
        {"index": int(i), "class": entry.classes[int(i)], "probability": float(p)}
        for p, i in zip(values, indices)
    ]
    return result


def _layer_output(entry: Entry, item: Input, name: str) -> torch.Tensor:
    with entry.busy():
        return capture_outputs(entry.model, item.tensor, [name])[name][0]


def feature_maps(entry: Entry, item: Input, index: int) -> dict[str, Any]:
    """Every channel of layer ``index``'s output for the input, each scaled to its own range."""
    name = entry.layer_name(index)
    out = _layer_output(entry, item, name).float()
    result: dict[str, Any] = {"layer": name, "index": index, "shape": list(out.shape)}
    if out.dim() != 3:  # a vector (dense layer): its values as one strip
        flat = out.flatten()
        result["vector"] = u8(flat[:4096])
        return result
    shown = min(out.shape[0], MAX_TILES)
    low = out[:shown].amin(dim=(1, 2), keepdim=True)
    high = out[:shown].amax(dim=(1, 2), keepdim=True)
    scaled = torch.where(high > low, (out[:shown] - low) / (high - low).clamp_min(1e-12) * 255, 0)
    data = scaled.round().clamp(0, 255).to(torch.uint8).numpy()
    result.update(
        channels=int(out.shape[0]),
        shown=shown,
        height=int(out.shape[1]),
        width=int(out.shape[2]),
        min=low.flatten().tolist(),
        max=high.flatten().tolist(),
        u8=base64.b64encode(data.tobytes()).decode(),
    )
    return result


def _padded_input(module: nn.Module, x: torch.Tensor, entry: Entry, name: str) -> torch.Tensor:
    """The layer's input as its window sees it: padded before the first row and column as the
    layer pads, and after the last by a full window (zeros; NaN for max pooling's -inf)."""
    window = entry.windows[name].window
    assert window is not None  # only called for windowed layers
    fill = math.nan if "max" in type(module).__name__.lower() else 0.0
    return F.pad(x, (window.pad[1], window.span(1), window.pad[0], window.span(0)), value=fill)


def pixel(entry: Entry, item: Input, index: int, channel: int, row: int, col: int) -> dict[str, Any]:
    """How one output pixel came about: its input box, and for a conv or pooling layer the window
    of the layer's input, the kernel slices and the sum they make.

    Raises:
        UsageError: a channel or pixel outside the layer's output, or a layer without feature
            maps (the request's values, answered 400).
    """
    name = entry.layer_name(index)
    module = get_layer(entry.model, name)
    seen: dict[str, torch.Tensor] = {}
    handle = module.register_forward_pre_hook(lambda _m, args: seen.setdefault("x", args[0].detach()))
    try:
        out = _layer_output(entry, item, name)
    finally:
        handle.remove()
    if out.dim() != 3:
        raise UsageError(f"layer {name} has no feature maps (output {list(out.shape)})")
    c_out, h_out, w_out = out.shape
    if not (0 <= channel < c_out and 0 <= row < h_out and 0 <= col < w_out):
        raise UsageError(f"pixel ({channel}, {row}, {col}) is outside the output {c_out}×{h_out}×{w_out}")
    lw = entry.windows[name]
    _, h_in, w_in = entry.input_shape
    top, left, bottom, right = lw.box(row, col)
    result: dict[str, Any] = {
        "layer": name,
        "channel": channel,
        "row": row,
        "col": col,
        "value": float(out[channel, row, col]),
        "receptive_field": list(lw.field),
        "box": [top, left, bottom, right],
        "box_clipped": [max(0, top), max(0, left), min(h_in - 1, bottom), min(w_in - 1, right)],
    }
    if lw.window is None or "x" not in seen:
        return result
    window = lw.window
    padded = _padded_input(module, seen["x"][0].float(), entry, name)
    r0, c0 = row * window.stride[0], col * window.stride[1]
    patch = padded[
        :, r0 : r0 + window.span(0) : window.dilation[0], c0 : c0 + window.span(1) : window.dilation[1]
    ]
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 4:
        groups = int(getattr(module, "groups", 1))
        per_group = weight.shape[1]
        first = (channel // (c_out // groups)) * per_group
        patch = patch[first : first + per_group]
        kernel = weight[channel].detach().float()
        bias = getattr(module, "bias", None)
        bias_value = float(bias[channel].detach()) if isinstance(bias, torch.Tensor) else 0.0
        pre = float((patch * kernel).sum()) + bias_value
        activation = getattr(module, "activation", None)
        act_name = type(activation).__name__ if isinstance(activation, nn.Module) else "Identity"
        post = float(activation(torch.tensor(pre))) if isinstance(activation, nn.Module) else pre
        shown = min(per_group, MAX_SLICES)
        result["conv"] = {
            "in_channels": int(per_group),
            "first_in_channel": int(first),
            "shown": shown,
            "window": patch[:shown].tolist(),
            "kernel": kernel[:shown].tolist(),
            "bias": bias_value,
            "sum": pre,
            "activation": act_name,
            "result": post,
        }
    else:
        plane = patch[channel]
        kind = "max" if "max" in type(module).__name__.lower() else "mean"
        valid = plane[~torch.isnan(plane)]
        value = float(valid.max() if kind == "max" else plane.nan_to_num(0).mean())
        rows = [[None if math.isnan(v) else v for v in r] for r in plane.tolist()]  # NaN: padding
        result["pool"] = {"window": rows, "op": kind, "result": value}
    result["stride"], result["kernel"] = list(window.stride), list(window.kernel)
    return result


def _fresh(module: nn.Module) -> torch.Tensor | None:
    """The weight of a freshly initialised copy of ``module`` (None if it cannot reset)."""
    if not hasattr(module, "reset_parameters"):
        return None
    clone = copy.deepcopy(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clone.reset_parameters()
    return clone.weight.detach().float()


def weights(entry: Entry, index: int, in_channel: int = 0) -> dict[str, Any]:
    """A layer's filters (one tile per output channel, one symmetric scale) and the histogram of
    its weights next to a freshly initialised copy's."""
    name = entry.layer_name(index)
    weight = layer_weight(entry.model, name)
    fresh = _fresh(get_layer(entry.model, name))
    result: dict[str, Any] = {"layer": name, "shape": list(weight.shape)}
    if weight.dim() == 4:
        if not 0 <= in_channel < weight.shape[1]:
            last = weight.shape[1] - 1
            raise UsageError(f"in_channel must be in 0..{last} for layer {name}, got {in_channel}")
        tiles, scale = filter_tiles(weight, in_channel=in_channel, color=False)
        tiles = tiles[:MAX_TILES]
        result["filters"] = {"in_channel": in_channel, "scale": scale, **u8(tiles, -scale, scale)}
    panels = {"trained" if entry.kind != "zoo" else "initialised (untrained)": weight}
    if fresh is not None and entry.kind != "zoo":
        panels["freshly initialised"] = fresh
    values = {k: v.double().flatten().numpy() for k, v in panels.items()}
    low = min(float(v.min()) for v in values.values())
    high = max(float(v.max()) for v in values.values())
    edges = np.linspace(low, high if high > low else low + 1e-6, HIST_BINS + 1)
    result["histogram"] = {
        "edges": edges.tolist(),
        "panels": [
            {"label": k, "counts": np.histogram(v, bins=edges)[0].tolist(), **weight_stats(panels[k])}
            for k, v in values.items()
        ],
    }
    return result


def gradcam(entry: Entry, item: Input, target: int | None, index: int | None) -> dict[str, Any]:
    """Grad-CAM of the input for class ``target`` (default: the predicted one) at layer ``index``
    (default: the model's last stage)."""
    from ..viz.gradcam import grad_cam

    if entry.task not in ("classify", "finetune"):
        raise UsageError(f"Grad-CAM explains a classifier's class scores; {entry.name} is a {entry.task} run")
    try:
        layer = default_cam_layer(entry.model) if index is None else entry.layer_name(index)
    except LookupError as exc:  # a query value out of range: the request's fault (400)
        raise UsageError(f"layer: {exc.args[0]}") from exc
    if target is not None and not 0 <= target < len(entry.classes):
        raise UsageError(f"class must be in 0..{len(entry.classes) - 1}, got {target}")
    if target is None:
        target = int(_forward(entry, item.tensor).argmax(1)[0])
    with entry.busy():
        cam = grad_cam(entry.model, item.tensor, target, layer)
    return {"layer": layer, "target": target, "class": entry.classes[target], "cam": u8(cam, 0.0, 1.0)}


def cam_layers(entry: Entry) -> list[str]:
    return conv_layer_names(entry.model)


def history(entry: Entry) -> dict[str, Any]:
    """The run's per-epoch metrics as ``cnnkit train`` last wrote them (empty before the first
    epoch ends), and when the file changed."""
    if entry.run_dir is None:
        return {"epochs": [], "mtime": None}
    path = entry.run_dir / "history.json"
    try:
        mtime = path.stat().st_mtime
        epochs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"epochs": [], "mtime": None}
    if not isinstance(epochs, list):
        epochs = []
    rows = [
        {k: v for k, v in row.items() if isinstance(v, int | float) and math.isfinite(v)}
        for row in epochs
        if isinstance(row, dict)
    ]
    return {"epochs": rows, "mtime": mtime}
