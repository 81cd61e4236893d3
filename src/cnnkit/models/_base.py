"""The one backbone interface every cnnkit model implements."""

from __future__ import annotations

import abc
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    """One stage of a backbone: where its output comes from and what it looks like.

    Attributes:
        name: qualified module name (as in ``model.named_modules()`` and ``cnnkit summary``).
        channels: channels of that module's output.
        stride: input pixels per output pixel (total downsampling so far).
    """

    name: str
    channels: int
    stride: int


class Backbone(nn.Module, metaclass=abc.ABCMeta):
    """Base class: ``forward(x) == forward_head(forward_features(x))``.

    Subclasses set ``feature_info`` (list of FeatureInfo, shallow to deep), ``num_classes``,
    ``num_features`` (width of the pre-logits vector) and ``default_input`` (C, H, W), and
    implement ``forward_features``, ``forward_head`` and ``reset_classifier``.
    """

    feature_info: list[FeatureInfo]
    num_classes: int
    num_features: int
    default_input: tuple[int, int, int]

    def __init__(self, *, num_classes: int | None = None, in_chans: int | None = None) -> None:
        """Check the arguments every builder takes, where the subclass has them (``ValueError``
        echoing a bad value)."""
        super().__init__()
        if num_classes is not None:
            check_num_classes(num_classes)
        if in_chans is not None:
            check_in_chans(in_chans)

    @abc.abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map, Tensor[N, C, H, W] -> Tensor[N, num_features', h, w]."""

    @abc.abstractmethod
    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features -> logits Tensor[N, num_classes] (or the pre-logits vector)."""

    @abc.abstractmethod
    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` (0: none)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of every stage in ``feature_info`` for one forward pass, shallow to deep."""
        modules = dict(self.named_modules())
        outputs: dict[str, torch.Tensor] = {}
        handles = []
        for info in self.feature_info:
            if info.name not in modules:
                raise KeyError(
                    f"feature_info names {info.name!r}, which is not a module of {type(self).__name__}"
                )

            def hook(_m: nn.Module, _i: object, out: torch.Tensor, key: str = info.name) -> None:
                outputs[key] = out

            handles.append(modules[info.name].register_forward_hook(hook))
        try:
            self.forward_features(x)
        finally:
            for h in handles:
                h.remove()
        return [outputs[info.name] for info in self.feature_info]


def check_num_classes(num_classes: int) -> int:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
    return num_classes


def check_bool(name: str, value: object) -> bool:
    """A builder's on/off option must be a real bool (``1`` or ``"yes"`` are refused)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_in_chans(in_chans: int) -> int:
    if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
        raise ValueError(f"in_chans must be an int >= 1, got {in_chans!r}")
    return in_chans


def init_relu_weights(model: nn.Module) -> None:
    """Initialise a ReLU net's convolutions and batch norms in place, in ``model.modules()`` order.

    Every ``nn.Conv2d`` gets He normal weights (fan_out: keeps the backward signal's variance)
    and a zero bias where it has one, every ``nn.BatchNorm2d`` unit scale and zero shift. Dense
    layers keep their own initialisation (``dense_head``'s ``linear_std``, else PyTorch's).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def dense_head(
    in_features: int, hidden: int, num_classes: int, *, dropout_first: bool, linear_std: float | None = None
) -> nn.Sequential:
    """Two ReLU dense layers of ``hidden`` units with dropout 0.5 each, then the classifier.

    Args:
        in_features: width of the flattened pooled maps.
        hidden: units of the two hidden layers (the pre-logits width).
        num_classes: classifier outputs (0: an ``nn.Identity`` in its place).
        dropout_first: dropout before each hidden dense layer (AlexNet) instead of after its ReLU
            (VGG); this fixes the module indices, which are torchvision's state-dict keys.
        linear_std: N(0, linear_std) weights and zero biases for the dense layers, drawn once
            (PyTorch's default initialisation is skipped: on VGG's 120 million dense weights it
            took as long as the draw that replaced it); None keeps PyTorch's default.

    Shape:
        Tensor[N, in_features] -> Tensor[N, num_classes].
    """

    def linear(width: int, units: int) -> nn.Linear:
        if linear_std is None:
            return nn.Linear(width, units)
        layer = torch.nn.utils.skip_init(nn.Linear, width, units)
        nn.init.normal_(layer.weight, 0.0, linear_std)
        nn.init.zeros_(layer.bias)
        return layer

    layers: list[nn.Module] = []
    for width in (in_features, hidden):
        dense = [linear(width, hidden), nn.ReLU(inplace=True)]
        layers += [nn.Dropout(0.5), *dense] if dropout_first else [*dense, nn.Dropout(0.5)]
    layers.append(linear(hidden, num_classes) if num_classes else nn.Identity())
    return nn.Sequential(*layers)


class DenseHeadCNN(Backbone):
    """``features`` (convs, pools), adaptive average pool ``avgpool``, ``classifier`` (dense).

    The torchvision layout of AlexNet and VGG: the last module of ``classifier`` is the
    classifier, the modules before it give the pre-logits. Subclasses build ``features`` and
    call ``_set_head``.
    """

    features: nn.Sequential
    classifier: nn.Sequential

    def _set_head(
        self,
        features: list[nn.Module],
        channels: int,
        grid: int,
        hidden: int,
        num_classes: int,
        *,
        dropout_first: bool,
        linear_std: float | None = None,
    ) -> None:
        """Attach ``features``, the pool to ``grid``×``grid`` and the :func:`dense_head`."""
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(grid)
        self.classifier = dense_head(
            channels * grid * grid, hidden, num_classes, dropout_first=dropout_first, linear_std=linear_std
        )
        self.num_classes = num_classes
        self.num_features = hidden

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, in_chans, H, W] -> the last pool's maps, Tensor[N, C, h, w]."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tensor[N, C, h, w] -> logits Tensor[N, num_classes] (Tensor[N, num_features] with
        ``pre_logits``)."""
        x = torch.flatten(self.avgpool(x), 1)
        hidden = self.classifier[:-1](x)
        return hidden if pre_logits else self.classifier[-1](hidden)

    def reset_classifier(self, num_classes: int) -> None:
        check_num_classes(num_classes)
        self.classifier[-1] = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes


class SequentialCNN(Backbone):
    """A Keras-style stack: ``features`` (convs and pools) then ``head`` (flatten, dense...).

    The last module of ``head`` is the classifier; everything before it gives the pre-logits.

    Args:
        features: named feature layers, in order.
        head: named head layers, in order; the last one is the classifier (a Dense layer).
        feature_info: the stages (see FeatureInfo).
        default_input: (C, H, W) the model is built for.
    """

    def __init__(
        self,
        features: OrderedDict[str, nn.Module],
        head: OrderedDict[str, nn.Module],
        feature_info: list[FeatureInfo],
        default_input: tuple[int, int, int],
        num_classes: int,
        num_features: int,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(features)
        self.head = nn.Sequential(head)
        self.feature_info = feature_info
        self.default_input = default_input
        self.num_classes = num_classes
        self.num_features = num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or torch.jit.is_tracing() or _hooked(self.features):
            return self.features(x)
        return _pool_before_relu(self.features, x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        layers = list(self.head)
        for layer in layers[:-1]:
            x = layer(x)
        return x if pre_logits else layers[-1](x)

    def reset_classifier(self, num_classes: int) -> None:
        from ..layers import Dense

        check_num_classes(num_classes)
        name = list(self.head._modules)[-1]
        self.head._modules[name] = (
            Dense(num_classes, in_features=self.num_features) if num_classes else nn.Identity()
        )
        self.num_classes = num_classes


def _pool_before_relu(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)``, with each (Conv2D with ReLU, MaxPool2D) pair computed as conv, max-pool,
    ReLU: ReLU is monotonic, so it commutes with a max. The values are the same, and so are the
    gradients: the max-pool's winner is the ReLU's input cell, or the window's max is <= 0 and
    the gradient is 0 either way. The ReLU, forward and backward, runs on a map 4× smaller.
    Modules with hooks run as they are (docs/performance.md)."""
    from ..layers import Conv2D, MaxPool2D

    modules = list(layers)
    i = 0
    while i < len(modules):
        layer = modules[i]
        after = modules[i + 1] if i + 1 < len(modules) else None
        if (
            isinstance(layer, Conv2D)
            and type(layer.activation) is nn.ReLU
            and isinstance(after, MaxPool2D)
            and not _hooked(layer, layer.activation, after)
        ):
            x = after.forward_relu(layer.forward_pre_activation(x))
            i += 2
        else:
            x = layer(x)
            i += 1
    return x


def _hooked(*modules: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)
