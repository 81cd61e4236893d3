"""Keras-style model summaries with MACs, receptive fields and memory estimates.

Works on any ``nn.Module``: one forward pass on zeros with hooks on the "layers" (modules that
own parameters or have no children; an activation inside a Conv2D belongs to that Conv2D).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import UsageError
from ..input_shape import SHAPES_NOTE, parse_input_shape
from ._fields import FieldTracker

# The one display convention of shapes in `cnnkit summary`, `cnnkit shape` and the diagram.

# Modules whose output is a view of their input: they cost no activation memory.
_VIEW_TYPES = (nn.Flatten, nn.Identity, nn.Unflatten)
# Inputs above this many elements (a 2048 x 2048 gray image) are traced on the meta device.
META_ABOVE_ELEMENTS = 2048 * 2048
# No input image may need more than this (1 TB): larger sizes are typing errors.
MAX_INPUT_BYTES = 10**12

OPTIMIZER_STATES = {
    "sgd": 0,
    "momentum": 1,
    "nesterov": 1,
    "rmsprop": 1,
    "adagrad": 1,
    "adam": 2,
    "adamw": 2,
    "nadam": 2,
}


@dataclass
class LayerRow:
    """One row of the summary table."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    activation_bytes: int
    receptive_field: int | None


@dataclass
class Summary:
    """The per-layer table and the totals of one model at one input shape.

    Memory figures are in bytes; ``per sample`` means for one image of ``input_shape``.
    """

    model: str
    input_shape: tuple[int, int, int]
    batch_size: int
    optimizer: str
    rows: list[LayerRow] = field(default_factory=list)
    output_shape: tuple[int, ...] = ()
    total_params: int = 0
    trainable_params: int = 0
    non_trainable_params: int = 0
    buffer_elements: int = 0
    param_bytes: int = 0
    buffer_bytes: int = 0
    total_macs: int = 0
    input_bytes: int = 0
    activation_bytes: int = 0
    inference_peak_bytes: int = 0
    training_bytes: int = 0

    @property
    def batch_activation_bytes(self) -> int:
        return self.activation_bytes * self.batch_size

    def layer_names(self) -> list[str]:
        return [r.name for r in self.rows]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["batch_activation_bytes"] = self.batch_activation_bytes
        return out

    def __str__(self) -> str:
        return format_summary(self)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    chosen: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not name:
            continue
        if any(name.startswith(parent + ".") for parent, _ in chosen) or isinstance(module, nn.Identity):
            continue
        owns = any(True for _ in module.parameters(recurse=False)) or any(
            True for _ in module.buffers(recurse=False)
        )
        if owns or not any(True for _ in module.children()):
            chosen.append((name, module))
    return chosen


def _macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        return 0
    if weight.dim() == 2:  # dense: one MAC per weight per output row
        return output.numel() // output.shape[-1] * weight.numel()
    if isinstance(module, nn.ConvTranspose2d):
        return inputs[0].numel() * weight.shape[1] * math.prod(weight.shape[2:])
    # conv: each output value costs (in_channels / groups) * kernel MACs
    return output.numel() * math.prod(weight.shape[1:])


@contextmanager
def _dry_run(
    model: nn.Module, shape: tuple[int, int, int], name: str | None, hooks: list
) -> Iterator[torch.Tensor]:
    """A zero batch Tensor[1, *shape] on the model's device, for one pass in eval mode, no grad.

    Afterwards the ``hooks`` handles are removed and the training mode is restored; a
    RuntimeError or ValueError raised in the block (an input the model cannot take) becomes a
    UsageError naming the model, the input, the layer that refused it and an input that works.
    """
    was_training = model.training
    model.eval()
    entered: list[tuple[str, nn.Module, tuple[int, ...]]] = []

    def note_entry(layer: str):
        def pre_hook(module: nn.Module, inputs: tuple) -> None:
            first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            entered.append((layer, module, tuple(first.shape[1:]) if first is not None else ()))

        return pre_hook

    own = [m.register_forward_pre_hook(note_entry(n)) for n, m in _layers(model)]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            yield torch.zeros((1, *shape), device=device)
    except (RuntimeError, ValueError) as exc:
        for h in own + hooks:
            h.remove()
        where = ""
        if entered:
            layer, module, got = entered[-1]
            where = f" at layer {layer} ({type(module).__name__}, input shape {got})"
        raise UsageError(
            f"{name or type(model).__name__} cannot take input {shape[1]}x{shape[2]}x{shape[0]}{where}: "
            f"{str(exc).splitlines()[0]}; {_input_fix(model, shape, device)}"
        ) from None
    finally:
        for h in own + hooks:
            h.remove()
        model.train(was_training)


def _input_fix(model: nn.Module, shape: tuple[int, int, int], device: torch.device) -> str:
    """The fix to suggest: the smallest larger input (x2, x4, ... x32) that the model takes."""
    c, h, w = shape
    for factor in (2, 4, 8, 16, 32):
        try:
            with torch.no_grad():
                model(torch.zeros((1, c, h * factor, w * factor), device=device))
        except (RuntimeError, ValueError):
            continue
        return f"a larger input works, e.g. --input {h * factor}x{w * factor}x{c}"
    return "give the input size (HxWxC) and channels the model was built for"


def check_input_size(shape: tuple[int, int, int], itemsize: int = 4) -> None:
    """Refuse an input (C, H, W) whose one image would need more than MAX_INPUT_BYTES.

    Raises:
        UsageError: naming the input and the memory it would need.
    """
    need = math.prod(shape) * itemsize
    if need > MAX_INPUT_BYTES:
        raise UsageError(
            f"--input {shape[1]}x{shape[2]}x{shape[0]} would need {human_bytes(need)} for one image "
            f"alone (the limit is {human_bytes(MAX_INPUT_BYTES)}); give a smaller --input"
        )


def _meta_copy(model: nn.Module) -> nn.Module:
    """The model with every parameter and buffer on the meta device (nothing copied)."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def summary(
    model: nn.Module,
    input_shape: tuple[int, int, int] | str,
    batch_size: int = 1,
    optimizer: str = "adam",
    dtype: torch.dtype = torch.float32,
    name: str | None = None,
) -> Summary:
    """Per-layer shapes, parameters, MACs, activation memory and receptive fields.

    Args:
        model: any module taking one image batch Tensor[N, C, H, W].
        input_shape: (C, H, W), or a Keras-style string ``'HxWxC'``.
        batch_size: batch used for the training-memory estimate.
        optimizer: sets the optimizer state per parameter (adam: 2, momentum: 1, sgd: 0).
        dtype: element type of activations and parameters for the byte counts.
        name: shown in the header (defaults to the class name).

    Returns:
        Summary (``str()`` renders the table).

    Raises:
        UsageError: bad shape, batch size or optimizer, an input the model cannot take, or one
            over MAX_INPUT_BYTES (inputs above META_ABOVE_ELEMENTS are measured on the meta
            device, without allocating their activations).
    """
    shape = parse_input_shape(input_shape)
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    if optimizer not in OPTIMIZER_STATES:
        raise UsageError(f"optimizer must be one of {sorted(OPTIMIZER_STATES)}, got {optimizer!r}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    rows: list[LayerRow] = []
    fields = FieldTracker()
    hooks = []

    def make_hook(layer_name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            tensor = output[0] if isinstance(output, tuple | list) else output
            if not isinstance(tensor, torch.Tensor):
                return
            rf = fields.step(layer_name, module, inputs, tensor).field[0]
            params = sum(p.numel() for p in module.parameters())
            act = 0 if isinstance(module, _VIEW_TYPES) else tensor[:1].numel() * itemsize
            rows.append(
                LayerRow(
                    layer_name,
                    type(module).__name__,
                    tuple(tensor.shape[1:]),
                    params,
                    _macs(module, inputs, tensor[:1]) if tensor.dim() else 0,
                    act,
                    rf if tensor.dim() == 4 else None,
                )
            )

        return hook

    check_input_size(shape, itemsize)
    # A large input runs through a copy on the meta device: shapes without memory, so the
    # summary can say what an input would need instead of trying to allocate it.
    target = _meta_copy(model) if math.prod(shape) > META_ABOVE_ELEMENTS else model
    for layer_name, module in _layers(target):
        hooks.append(module.register_forward_hook(make_hook(layer_name)))
    with _dry_run(target, shape, name, hooks) as x:
        fields.start(x)
        out = target(x)

    s = Summary(name or type(model).__name__, shape, batch_size, optimizer, rows)
    out_t = out[0] if isinstance(out, tuple | list) else out
    s.output_shape = tuple(out_t.shape[1:]) if isinstance(out_t, torch.Tensor) else ()
    s.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    s.total_params = sum(p.numel() for p in model.parameters())
    s.non_trainable_params = s.total_params - s.trainable_params
    s.buffer_elements = sum(b.numel() for b in model.buffers())
    s.param_bytes = s.total_params * itemsize
    s.buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    s.total_macs = sum(r.macs for r in rows)
    s.input_bytes = math.prod(shape) * itemsize
    s.activation_bytes = sum(r.activation_bytes for r in rows)
    sizes = [s.input_bytes] + [r.activation_bytes or 0 for r in rows]
    pair = max((a + b for a, b in zip(sizes, sizes[1:])), default=s.input_bytes)
    s.inference_peak_bytes = pair + s.param_bytes + s.buffer_bytes
    grads = s.trainable_params * itemsize
    s.training_bytes = (
        s.batch_activation_bytes
        + s.input_bytes * batch_size
        + s.param_bytes
        + s.buffer_bytes
        + grads
        + OPTIMIZER_STATES[optimizer] * grads
    )
    return s


def human_bytes(n: float) -> str:
    """Decimal units, as the course's memory exercise uses (1 MB = 10^6 bytes)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"


def format_summary(s: Summary) -> str:
    c, h, w = s.input_shape
    header = ("Layer (name)", "Type", "Output shape", "Param #", "MACs", "Act. memory", "RF")
    table = [header]
    for r in s.rows:
        table.append(
            (
                r.name,
                r.type,
                str(r.output_shape),
                f"{r.params:,}",
                f"{r.macs:,}",
                human_bytes(r.activation_bytes),
                "" if r.receptive_field is None else str(r.receptive_field),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    line = "  ".join("-" * w_ for w_ in widths)

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(v.ljust(wd) if i < 3 else v.rjust(wd) for i, (v, wd) in enumerate(zip(row, widths)))

    out = [f'Model: "{s.model}"   input {h}x{w}x{c} (HxWxC)   {SHAPES_NOTE}', line, fmt(header), line]
    out += [fmt(row) for row in table[1:]]
    out.append(line)
    out += [
        f"Total params: {s.total_params:,} ({human_bytes(s.param_bytes)})",
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trainable params: {s.non_trainable_params:,}",
        f"Buffers (e.g. batch-norm statistics, not parameters): {s.buffer_elements:,}",
        f"MACs per image: {s.total_macs:,} ({2 * s.total_macs / 1e6:,.2f} MFLOP forward)",
        f"Activations per image (forward): {human_bytes(s.activation_bytes)}",
        f"Activations for a batch of {s.batch_size}: {human_bytes(s.batch_activation_bytes)}",
        "Inference peak (largest pair of consecutive activations + parameters): "
        f"{human_bytes(s.inference_peak_bytes)}",
        f"Training memory, batch {s.batch_size} with {s.optimizer} (activations + inputs + parameters "
        f"+ gradients + optimizer state): {human_bytes(s.training_bytes)}",
    ]
    return "\n".join(out)
