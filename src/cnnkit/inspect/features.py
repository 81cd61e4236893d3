"""Forward hooks: find a layer by its summary name, capture its output, trace the layer graph.

Layer names are the qualified module names ``cnnkit summary`` prints (``features.conv1``,
``layer4.2.conv3``); any other module name (a container such as ``layer4``) is accepted too.
Everything here works on any ``nn.Module``, Sequential or not, because it only hooks modules.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import UsageError
from .summary import _dry_run, _layers, parse_input_shape

__all__ = [
    "GraphNode",
    "LayerGraph",
    "capture_outputs",
    "conv_layer_names",
    "default_cam_layer",
    "first_tensor",
    "get_layer",
    "layer_names",
    "record_outputs",
    "trace_graph",
    "weight_layer_names",
]


def layer_names(model: nn.Module) -> list[str]:
    """The layer names ``cnnkit summary`` shows (modules that own parameters, or leaves)."""
    return [name for name, _ in _layers(model)]


def _stage_names(model: nn.Module) -> list[str]:
    return [info.name for info in getattr(model, "feature_info", None) or []]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The module called ``name`` (a summary name, a ``feature_info`` stage or any module name).

    Raises:
        UsageError: an unknown name; the message suggests close matches and lists the valid names.
    """
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    valid = layer_names(model)
    stages = [s for s in _stage_names(model) if s not in valid]
    close = difflib.get_close_matches(name, valid + stages, n=3, cutoff=0.6) or difflib.get_close_matches(
        name, [n for n in modules if n], n=3, cutoff=0.6
    )
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    extra = f" (stages: {', '.join(stages)})" if stages else ""
    raise UsageError(
        f"unknown layer {name!r}{hint}; valid layers (as in `cnnkit summary`): {', '.join(valid)}{extra}"
    )


def _has_weight(module: nn.Module, dims: Iterable[int]) -> bool:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or isinstance(weight, nn.parameter.UninitializedParameter):
        return False
    return weight.dim() in tuple(dims)


def conv_layer_names(model: nn.Module) -> list[str]:
    """Summary names of the convolution layers (modules with a 4-D ``weight``), in model order."""
    return [name for name, module in _layers(model) if _has_weight(module, (4,))]


def weight_layer_names(model: nn.Module) -> list[str]:
    """Summary names of layers with a weight matrix or kernel (dense and conv layers)."""
    return [name for name, module in _layers(model) if _has_weight(module, (2, 3, 4, 5))]


def default_cam_layer(model: nn.Module) -> str:
    """Where Grad-CAM looks by default: the last ``feature_info`` stage, else the last conv layer.

    Raises:
        UsageError: a model without stages and without conv layers.
    """
    stages = _stage_names(model)
    if stages:
        return stages[-1]
    convs = conv_layer_names(model)
    if not convs:
        raise UsageError(f"{type(model).__name__} has no feature_info and no conv layer; pass --layer")
    return convs[-1]


def first_tensor(output: object) -> torch.Tensor | None:
    """The first tensor of a module output (a tensor, or a tuple/list/dict holding tensors)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, tuple | list):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


@contextmanager
def record_outputs(
    model: nn.Module, names: Sequence[str], detach: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Hook the named layers; the yielded dict fills with their outputs on the next forward.

    A layer called several times in one forward pass (a shared ReLU module, for example) keeps
    its last output.

    Args:
        model: any module.
        names: layer names (see :func:`get_layer`).
        detach: store detached tensors (set False to keep them in the autograd graph).

    Raises:
        UsageError: an unknown layer name.
    """
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            module = get_layer(model, name)

            def hook(_m: nn.Module, _i: object, out: object, key: str = name) -> None:
                tensor = first_tensor(out)
                if tensor is not None:
                    outputs[key] = tensor.detach() if detach else tensor

            handles.append(module.register_forward_hook(hook))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def capture_outputs(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for one forward pass of ``x`` (eval mode, no gradients).

    Args:
        model: any module.
        x (Tensor[N, C, H, W]): model input, already on the model's device and normalised.
        names: layer names (see :func:`get_layer`).

    Returns:
        name -> that layer's output, e.g. Tensor[N, C', H', W'] for a conv layer, in ``names`` order.
    """
    was_training = model.training
    model.eval()
    try:
        with record_outputs(model, names) as outputs, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    missing = [n for n in names if n not in outputs]
    if missing:
        raise UsageError(
            f"layer(s) {', '.join(missing)} did not run in the forward pass of {type(model).__name__}"
        )
    return {n: outputs[n] for n in names}


# ----------------------------------------------------------------------------- graph tracing


@dataclass
class GraphNode:
    """One box of the architecture diagram.

    Attributes:
        index: position in execution order (0 is the input).
        name: module name (``layer1.0.conv1``), ``input``, or the function name for a
            functional step between layers (``add``, ``cat``, ``flatten``).
        kind: ``"input"``, ``"layer"`` (a summary layer) or ``"op"`` (a functional step).
        type: the module's class name, or the function name for ops.
        parents: indices of the nodes whose outputs feed this one, in argument order.
        input_shapes: shapes (without the batch axis) of the tensors fed in.
        output_shape: shape of the (first) output, without the batch axis.
        params: parameters owned by the layer (shared modules count at each call).
    """

    index: int
    name: str
    kind: str
    type: str
    parents: list[int] = field(default_factory=list)
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    output_shape: tuple[int, ...] = ()
    params: int = 0


@dataclass
class LayerGraph:
    """The data flow of one forward pass: which layer's output feeds which layer."""

    model: str
    input_shape: tuple[int, int, int]
    nodes: list[GraphNode]

    def children(self, index: int) -> list[int]:
        return [n.index for n in self.nodes if index in n.parents]

    def edges(self) -> list[tuple[int, int]]:
        return [(p, n.index) for n in self.nodes for p in n.parents]

    def by_name(self, name: str) -> list[GraphNode]:
        return [n for n in self.nodes if n.name == name]


# Tensor methods that only move or copy data: the diagram passes straight through them.
_PASS_THROUGH = {
    "contiguous",
    "clone",
    "detach",
    "to",
    "float",
    "double",
    "half",
    "cpu",
    "cuda",
    "type",
    "type_as",
    "requires_grad_",
    "__deepcopy__",
    "__get__",
    "__set__",
}
_OP_ALIASES = {
    "iadd": "add",
    "radd": "add",
    "imul": "mul",
    "rmul": "mul",
    "isub": "sub",
    "rsub": "sub",
    "itruediv": "div",
    "truediv": "div",
    "matmul": "matmul",
    "getitem": "slice",
}


def _op_name(func: object) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    name = name.strip("_")
    return _OP_ALIASES.get(name, name)


def _tensors(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, tuple | list):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


class _GraphRecorder(TorchFunctionMode):
    """Records torch functions called between layers; inside a hooked layer it only counts depth.

    Hooks alone see layers but not the functional glue between them (``out + identity`` in a
    residual unit, ``torch.cat`` in an Inception block); this mode sees that glue, and running
    the model for real (unlike ``torch.fx`` symbolic tracing) works whatever Python control
    flow its ``forward`` uses.
    """

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[GraphNode] = []
        self.producer: dict[int, int] = {}  # id(tensor) -> node index
        self.keep: list[torch.Tensor] = []  # holds every tensor so that ids are never reused
        self.depth = 0
        self.pending: list[tuple[list[int], list[tuple[int, ...]]]] = []

    def parents_of(self, tensors: list[torch.Tensor]) -> tuple[list[int], list[tuple[int, ...]]]:
        parents, shapes = [], []
        for t in tensors:
            if id(t) in self.producer:
                parents.append(self.producer[id(t)])
                shapes.append(tuple(t.shape[1:]))
        return parents, shapes

    def add_node(
        self,
        name: str,
        kind: str,
        type_: str,
        parents: list[int],
        shapes: list[tuple[int, ...]],
        output: torch.Tensor,
        params: int = 0,
    ) -> None:
        node = GraphNode(len(self.nodes), name, kind, type_, parents, shapes, tuple(output.shape[1:]), params)
        self.nodes.append(node)
        self.producer[id(output)] = node.index
        self.keep.append(output)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth:
            return out
        outs = _tensors(out)
        if not outs:
            return out
        parents, shapes = self.parents_of(_tensors(args) + _tensors(kwargs))
        if not parents:
            return out  # a constant made inside forward: not part of the data flow
        name = _op_name(func)
        if name in _PASS_THROUGH and len(parents) == 1:
            for t in outs:
                self.producer[id(t)] = parents[0]
                self.keep.append(t)
            return out
        self.add_node(name, "op", name, parents, shapes, outs[0])
        for t in outs[1:]:
            self.producer[id(t)] = self.nodes[-1].index
            self.keep.append(t)
        return out


def trace_graph(
    model: nn.Module, input_shape: tuple[int, int, int] | str, name: str | None = None
) -> LayerGraph:
    """Run one forward pass on zeros and record which layer's output feeds which layer.

    Layers are the ``cnnkit summary`` rows; functional steps between them (additions of
    residual units, concatenations of Inception blocks, ``torch.flatten``) become ``op`` nodes.

    Args:
        model: any module taking one image batch.
        input_shape: (C, H, W) or ``'HxWxC'``.
        name: model name for the diagram title (default: the class name).

    Returns:
        LayerGraph whose nodes are in execution order; node 0 is the input.

    Raises:
        UsageError: a bad shape, or an input the model cannot take.
    """
    shape = parse_input_shape(input_shape)
    # nn.Identity changes nothing; its input flows straight on (as in the summary table).
    layers = [(n, m) for n, m in _layers(model) if not isinstance(m, nn.Identity)]
    layers = layers or [(type(model).__name__, model)]
    recorder = _GraphRecorder()
    handles = []

    for layer_name, module in layers:
        params = sum(p.numel() for p in module.parameters())

        def pre_hook(_m: nn.Module, args: tuple, kwargs: dict, key: str = layer_name) -> None:
            recorder.pending.append(recorder.parents_of(_tensors(args) + _tensors(kwargs)))
            recorder.depth += 1

        def post_hook(
            m: nn.Module,
            _args: tuple,
            _kwargs: dict,
            out: object,
            key: str = layer_name,
            n_params: int = params,
        ) -> None:
            recorder.depth -= 1
            parents, shapes = recorder.pending.pop()
            outs = _tensors(out)
            if outs:
                recorder.add_node(key, "layer", type(m).__name__, parents, shapes, outs[0], n_params)
                for t in outs[1:]:
                    recorder.producer[id(t)] = recorder.nodes[-1].index
                    recorder.keep.append(t)

        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
    with _dry_run(model, shape, name, handles) as x:
        recorder.add_node("input", "input", "Input", [], [], x)
        with recorder:
            out = model(x)
    outputs = {recorder.producer[id(t)] for t in _tensors(out) if id(t) in recorder.producer}
    return LayerGraph(name or type(model).__name__, shape, _prune(recorder.nodes, outputs))


def _prune(nodes: list[GraphNode], outputs: set[int]) -> list[GraphNode]:
    """Drop functional steps whose result no layer uses (shape checks, asserts), renumbering."""
    alive = {n.index for n in nodes}
    while True:
        used = {p for n in nodes if n.index in alive for p in n.parents}
        dead = {
            n.index
            for n in nodes
            if n.index in alive and n.kind == "op" and n.index not in used and n.index not in outputs
        }
        if not dead:
            break
        alive -= dead
    new_index = {old: new for new, old in enumerate(sorted(alive))}
    kept = []
    for n in nodes:
        if n.index in alive:
            n.parents = [new_index[p] for p in n.parents]
            n.index = new_index[n.index]
            kept.append(n)
    return kept
