"""Int8 inference on the CPU: post-training static quantization of plain CNN classifiers.

The kernels are PyTorch's own quantized operators (the oneDNN engine where PyTorch has it,
else x86 / FBGEMM, QNNPACK on ARM), driven by ``torch.ao.quantization``'s eager-mode
prepare / calibrate / convert. What cnnkit adds is the step that API cannot do by itself:
rewriting a cnnkit model (Keras-style Conv2D / Dense with built-in activations, BatchNorm
after a max-pool) as the plain ``torch.nn`` chain it quantizes, with every BatchNorm folded
into its convolution.

Int8 changes the numbers: on the course CNN it agrees with the float32 predictions on about
99 % of the test images and moves the accuracy by a few hundredths of a point
(docs/performance.md). Scoring every image in int8 is therefore an explicit choice
(``cnnkit evaluate --int8``); the default uses int8 only where the float model's class cannot
change (:mod:`.cascade`).

Deprecated: PyTorch marks eager ``torch.ao.quantization`` for removal. The maintained path is
``cnnkit export RUN --int8`` (ONNX Runtime static QDQ quantization, :mod:`cnnkit.export.int8`);
this one stays until that is measured at least as fast on an idle machine (docs/export.md).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["Int8Classifier", "float_chain", "int8_from_state_dict", "quantize_int8", "quantized_engine"]

# oneDNN first: with its full 8-bit activation range it agreed with float32 on 99.0 % of the
# course CNN's test predictions, against 98.0 % for x86's reduced range, at the same speed.
_ENGINES = ("onednn", "x86", "fbgemm", "qnnpack")


def quantized_engine() -> str:
    """The quantized engine for this CPU: the first of onednn / x86 / fbgemm / qnnpack (ARM) that
    this PyTorch build has.

    Raises:
        RuntimeError: this PyTorch build has no quantized CPU engine.
    """
    supported = set(torch.backends.quantized.supported_engines)
    for engine in _ENGINES:
        if engine in supported:
            return engine
    raise RuntimeError(
        f"this PyTorch build has no quantized CPU engine (it has {sorted(supported)}); "
        "run the model in float32 instead of int8"
    )


@contextlib.contextmanager
def _engine(name: str) -> Iterator[None]:
    before = torch.backends.quantized.engine
    if before != name:
        torch.backends.quantized.engine = name
    try:
        yield
    finally:
        if torch.backends.quantized.engine != before:
            torch.backends.quantized.engine = before


def _leaves(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules a cnnkit classifier runs, in order: nested Sequentials opened up."""
    from ...models._base import SequentialCNN

    if isinstance(module, SequentialCNN):
        parts = [("features", module.features), ("head", module.head)]
    elif isinstance(module, nn.Sequential):
        parts = list(module.named_children())
    else:
        return [("", module)]
    out = []
    for name, child in parts:
        for sub, leaf in _leaves(child):
            out.append((f"{name}.{sub}" if sub else name, leaf))
    return out


def _unsupported(name: str, layer: nn.Module, why: str) -> ValueError:
    return ValueError(
        f"int8 inference cannot run layer {name!r} ({type(layer).__name__}): {why}. It supports "
        "sequential CNNs of Conv2D, Dense, BatchNorm2d, max/average pooling, global average "
        "pooling, Flatten, ReLU and Dropout (hongong_cnn, fashion_bn_cnn, ...); run this model in "
        "float32 (leave out --int8)"
    )


_UNBUILT = "its weights are not built yet (run one batch through the model first)"


def _activation(name: str, layer: nn.Module) -> list[nn.Module]:
    act = layer.activation
    if isinstance(act, nn.Identity):
        return []
    if type(act) is nn.ReLU:
        return [nn.ReLU()]
    raise _unsupported(name, layer, f"its activation {type(act).__name__} has no int8 kernel here")


def _bn_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    weight = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
    return weight / torch.sqrt(bn.running_var + bn.eps)


def _conv(name: str, layer: nn.Module) -> nn.Conv2d:
    if layer.has_uninitialized_params():
        raise _unsupported(name, layer, _UNBUILT)
    padding = layer._static_padding
    if padding is None:
        raise _unsupported(name, layer, "its 'same' padding is uneven (an even kernel or a stride > 1)")
    conv = nn.Conv2d(
        layer.in_channels,
        layer.filters,
        layer.kernel_size,
        stride=layer.strides,
        padding=padding,
        dilation=layer.dilation_rate,
        groups=layer.groups,
        bias=layer.bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        if layer.bias is not None:
            conv.bias.copy_(layer.bias)
    return conv.eval()


def float_chain(model: nn.Module) -> nn.Sequential:
    """The eval-mode function of a cnnkit sequential classifier as a plain ``torch.nn`` chain.

    BatchNorm is folded into the convolution before it, also across a max-pool (conv, pool,
    BN: exact when every BN scale is positive, since a positive per-channel affine map commutes
    with a max), and a ReLU right after such a pool moves before it (ReLU commutes with a max),
    so that each convolution fuses with its ReLU. Dropout is left out (eval mode).

    Returns:
        An nn.Sequential in eval mode, Tensor[N, C, H, W] -> logits Tensor[N, K], equal to
        ``model.eval()(x)`` up to float rounding.

    Raises:
        ValueError: a layer has no int8 equivalent (names it).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from ...layers import AvgPool2D, Conv2D, Dense, GlobalAvgPool2D, MaxPool2D

    leaves = _leaves(model)
    if any(p.device.type != "cpu" for p in model.parameters()):
        model = copy.deepcopy(model).cpu()
        leaves = _leaves(model)
    out: list[nn.Module] = []
    i = 0
    while i < len(leaves):
        name, layer = leaves[i]
        nxt = leaves[i + 1][1] if i + 1 < len(leaves) else None
        if isinstance(layer, Conv2D):
            conv = _conv(name, layer)
            if isinstance(nxt, nn.BatchNorm2d) and isinstance(layer.activation, nn.Identity):
                conv = fuse_conv_bn_eval(conv, nxt.eval())
                i += 1
            out += [conv, *_activation(name, layer)]
        elif isinstance(layer, MaxPool2D | AvgPool2D):
            if layer.padding != "valid":
                raise _unsupported(name, layer, "only 'valid' pooling has an int8 kernel here")
            cls = nn.MaxPool2d if isinstance(layer, MaxPool2D) else nn.AvgPool2d
            pool = cls(layer.pool_size, layer.strides)
            following = leaves[i + 1 : i + 3]
            if (
                isinstance(layer, MaxPool2D)
                and out
                and isinstance(out[-1], nn.Conv2d)
                and following
                and isinstance(following[0][1], nn.BatchNorm2d)
                and bool((_bn_scale(following[0][1]) > 0).all())
            ):
                # conv, max-pool, BN, ReLU (a pool_first stage) == conv+BN, ReLU, max-pool.
                out[-1] = fuse_conv_bn_eval(out[-1], following[0][1].eval())
                i += 1
                if len(following) > 1 and type(following[1][1]) is nn.ReLU:
                    out.append(nn.ReLU())
                    i += 1
            out.append(pool)
        elif isinstance(layer, nn.BatchNorm2d):
            bn = copy.deepcopy(layer).eval()
            out.append(bn)
        elif type(layer) is nn.ReLU:
            out.append(nn.ReLU())
        elif isinstance(layer, GlobalAvgPool2D):
            out.append(nn.AdaptiveAvgPool2d(1))
            if not layer.keepdims:
                out.append(nn.Flatten(1))
        elif isinstance(layer, nn.Flatten):
            out.append(nn.Flatten(layer.start_dim, layer.end_dim))
        elif isinstance(layer, Dense):
            if layer.has_uninitialized_params():
                raise _unsupported(name, layer, _UNBUILT)
            linear = nn.Linear(layer.in_features, layer.units, bias=layer.bias is not None)
            with torch.no_grad():
                linear.weight.copy_(layer.weight)
                if layer.bias is not None:
                    linear.bias.copy_(layer.bias)
            out += [linear, *_activation(name, layer)]
        elif isinstance(layer, nn.modules.dropout._DropoutNd | nn.Identity):
            pass
        else:
            raise _unsupported(name or "model", layer, "no int8 equivalent")
        i += 1
    return nn.Sequential(*out).eval()


class Int8Classifier(nn.Module):
    """A quantized classifier: float Tensor[N, C, H, W] in, float logits Tensor[N, K] out.

    Runs on the CPU only, with the quantized engine it was converted for.
    """

    def __init__(self, net: nn.Sequential, engine: str, num_classes: int | None) -> None:
        super().__init__()
        from torch.ao.quantization import DeQuantStub, QuantStub

        self.quant = QuantStub()
        self.net = net
        self.dequant = DeQuantStub()
        self.engine = engine
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"int8 inference runs on the CPU, got a tensor on {x.device}; use --device cpu")
        with _engine(self.engine), quiet_quantization():
            return self.dequant(self.net(self.quant(x.float())))


def _fusions(chain: nn.Sequential) -> list[list[str]]:
    layers = list(chain)
    pairs = []
    for k in range(len(layers) - 1):
        if isinstance(layers[k], nn.Conv2d | nn.Linear) and type(layers[k + 1]) is nn.ReLU:
            pairs.append([str(k), str(k + 1)])
    return pairs


def quantize_int8(
    model: nn.Module,
    calibration: torch.Tensor,
    *,
    batch_size: int = 256,
    engine: str | None = None,
) -> Int8Classifier:
    """Post-training static int8 quantization of a cnnkit sequential classifier.

    Weights are quantized per output channel; activation ranges come from running
    ``calibration`` through the model (a few hundred to a few thousand training images; never
    the test set). The model itself is left unchanged.

    Args:
        model: a sequential cnnkit classifier (see ``float_chain``).
        calibration: Tensor[N, C, H, W], float and prepared as the model expects (scaled and
            normalised), on any device.
        batch_size: calibration batch size.
        engine: a quantized engine name; None picks ``quantized_engine()``.

    Returns:
        An Int8Classifier in eval mode, on the CPU.

    Raises:
        ValueError: an unsupported layer, an empty or non-4-D calibration batch, an engine this
            PyTorch lacks.
        RuntimeError: no quantized engine at all.
    """
    tq = _ao_quantization()
    if calibration.dim() != 4 or len(calibration) == 0:
        raise ValueError(
            f"calibration must be a non-empty Tensor[N, C, H, W], got shape {tuple(calibration.shape)}"
        )
    if not calibration.is_floating_point():
        raise ValueError(
            f"calibration must be float (prepared like the model's input), got {calibration.dtype}"
        )
    engine = _check_engine(engine)
    wrapped = _prepared(model, engine, tq)
    with quiet_quantization(), _engine(engine):
        with torch.inference_mode():
            for start in range(0, len(calibration), batch_size):
                wrapped(calibration[start : start + batch_size].cpu().float())
        tq.convert(wrapped, inplace=True)
    return wrapped


def int8_from_state_dict(
    model: nn.Module, state_dict: dict[str, Any], engine: str | None = None
) -> Int8Classifier:
    """An Int8Classifier of ``model`` rebuilt from the ``state_dict()`` of one that
    ``quantize_int8`` made of the same model for the same engine: no calibration pass.

    Raises:
        ValueError: an unsupported layer, an engine this PyTorch lacks, or a state_dict that does
            not fit (its keys or shapes).
        RuntimeError: no quantized engine at all.
    """
    tq = _ao_quantization()
    engine = _check_engine(engine)
    wrapped = _prepared(model, engine, tq)
    # Weights are packed for the engine when they are set: load inside it.
    with quiet_quantization(), _engine(engine):
        tq.convert(wrapped, inplace=True)  # observers without data: their ranges come next
        try:
            wrapped.load_state_dict(state_dict)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise ValueError(f"the int8 state_dict does not fit {type(model).__name__}: {exc}") from None
    return wrapped.eval()


def _ao_quantization() -> Any:
    try:
        import torch.ao.quantization as tq
    except ImportError as exc:  # announced to move out of PyTorch's core
        raise RuntimeError(
            f"this PyTorch ({torch.__version__}) has no torch.ao.quantization, which int8 inference "
            "uses; run the model in float32 (leave out --int8)"
        ) from exc
    return tq


def _check_engine(engine: str | None) -> str:
    engine = engine or quantized_engine()
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(
            f"quantized engine {engine!r} is not in this PyTorch build; choose one of "
            f"{list(torch.backends.quantized.supported_engines)}"
        )
    return engine


@contextlib.contextmanager
def quiet_quantization() -> Iterator[None]:
    """PyTorch marks its eager quantization API and quantized dtypes for a move to a separate
    package; they are what runs here, so their notices would only alarm the user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*(deprecated|reduce_range)", category=UserWarning)
        # an observer that saw no data (int8_from_state_dict): its range is loaded after
        warnings.filterwarnings("ignore", message=".*must run observer", category=UserWarning)
        yield


def _prepared(model: nn.Module, engine: str, tq: Any) -> Int8Classifier:
    """The model's float chain, Conv/Linear + ReLU fused, wrapped and with observers in."""
    chain = float_chain(model)
    pairs = _fusions(chain)
    if pairs:
        chain = tq.fuse_modules(chain, pairs)
    wrapped = Int8Classifier(chain, engine, getattr(model, "num_classes", None)).eval()
    with quiet_quantization(), _engine(engine):
        wrapped.qconfig = tq.get_default_qconfig(engine)
        tq.prepare(wrapped, inplace=True)
    return wrapped
