"""A small BatchNorm CNN for the fast training preset (Fashion-MNIST in seconds on a CPU)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ..layers import Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, conv_output_size
from ._base import FeatureInfo, SequentialCNN, check_in_chans, check_num_classes
from ._registry import register_model


def _conv_bn(in_ch: int, out_ch: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm shift that follows makes it redundant.
    return [
        Conv2D(out_ch, 3, padding="same", use_bias=False, kernel_initializer="he_normal", in_channels=in_ch),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


@register_model(
    input_size=(1, 28, 28),
    description="Fast-preset CNN: stages of (3×3 conv + BatchNorm + ReLU)×k + max-pool, global pool, dense",
)
def fashion_bn_cnn(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    widths: Sequence[int] = (32, 64, 128),
    depth: int | Sequence[int] = 1,
    hidden: int = 0,
    dropout: float = 0.0,
    input_size: int = 28,
    pool_first: bool = False,
) -> SequentialCNN:
    """A VGG-style BatchNorm CNN sized for 28×28 inputs and a CPU budget.

    Each stage is ``depth`` × (3×3 'same' conv, BatchNorm, ReLU) then a 2×2 max-pool; a global
    average pool and one Dense layer give the logits. The default (32, 64, 128) × 1 costs about
    2× the course CNN's FLOPs; the fast preset uses ``widths=(16, 48), hidden=128, pool_first=True``
    with a whitened first layer.

    Args:
        num_classes: logits (0: no classifier, ``forward`` returns the pooled features).
        in_chans: input channels.
        widths: channels of each stage.
        depth: convolutions per stage: one count for every stage, or one per stage.
        hidden: 0 for a global-average-pool head; else flatten the last feature map into a
            Dense layer of ``hidden`` ReLU units (keeps where things are, at little cost).
        dropout: dropout before the classifier.
        input_size: square input side (the flatten head is sized for it).
        pool_first: max-pool each stage's last convolution *before* its BatchNorm and ReLU
            (conv, pool, BN, ReLU), so that BatchNorm and ReLU, forward and backward, run on a
            map 4× smaller. Not the same function as BN, ReLU, pool (BN's scale may be
            negative), but a net as good; training is about 1.5× faster on a CPU
            (docs/performance.md).
    """
    check_num_classes(num_classes)
    check_in_chans(in_chans)
    widths = tuple(widths)
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be positive ints, got {widths!r}")
    depths = (depth,) * len(widths) if isinstance(depth, int) else tuple(depth)
    if len(depths) != len(widths) or any(not isinstance(d, int) or d < 1 for d in depths):
        raise ValueError(
            f"depth must be an int >= 1 or one such int per stage ({len(widths)}), got {depth!r}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    features: OrderedDict[str, nn.Module] = OrderedDict()
    info = []
    in_ch = in_chans
    for i, (width, stage_depth) in enumerate(zip(widths, depths), start=1):
        layers = []
        for _ in range(stage_depth):
            layers += _conv_bn(in_ch, width)
            in_ch = width
        if pool_first:
            features[f"stage{i}"] = nn.Sequential(*layers[:-2])
            features[f"pool{i}"] = MaxPool2D(2)
            features[f"act{i}"] = nn.Sequential(*layers[-2:])
            info.append(FeatureInfo(f"features.act{i}", width, 2**i))
        else:
            features[f"stage{i}"] = nn.Sequential(*layers)
            features[f"pool{i}"] = MaxPool2D(2)
            info.append(FeatureInfo(f"features.pool{i}", width, 2**i))
    if not isinstance(hidden, int) or hidden < 0:
        raise ValueError(f"hidden must be an int >= 0, got {hidden!r}")
    head: OrderedDict[str, nn.Module] = OrderedDict()
    if hidden:
        side = input_size
        for _ in widths:
            side = conv_output_size(side, 2, 2)
        if side < 1:
            raise ValueError(f"input_size {input_size} is too small for {len(widths)} pooling stages")
        head["flatten"] = Flatten()
        head["dense1"] = Dense(
            hidden, activation="relu", kernel_initializer="he_normal", in_features=in_ch * side * side
        )
        num_features = hidden
    else:
        head["gap"] = GlobalAvgPool2D()
        num_features = in_ch
    if dropout:
        head["dropout"] = nn.Dropout(dropout)
    head["classifier"] = Dense(num_classes, in_features=num_features) if num_classes else nn.Identity()
    return SequentialCNN(features, head, info, (in_chans, input_size, input_size), num_classes, num_features)
