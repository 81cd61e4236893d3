"""The course's own CNNs: 혼공머신 ch. 8, Géron ch. 14 Fashion-MNIST, and the ch. 14 exercise."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..layers import Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, conv_output_size
from ._base import FeatureInfo, SequentialCNN, check_in_chans, check_num_classes
from ._registry import register_model


def _check_size(size: int, min_size: int) -> int:
    if not isinstance(size, int) or size < min_size:
        raise ValueError(f"input_size must be an int >= {min_size}, got {size!r}")
    return size


@register_model(
    input_size=(1, 28, 28),
    description="혼공머신 ch. 8 Fashion-MNIST CNN: 2×(conv 3×3 same + max-pool), dense 100, dropout 0.4",
)
def hongong_cnn(*, num_classes: int = 10, in_chans: int = 1, input_size: int = 28) -> SequentialCNN:
    """The 333,526-parameter CNN of 혼자 공부하는 머신러닝+딥러닝, ch. 8 (28×28×1, 10 classes).

    Args:
        num_classes: outputs of the last Dense layer (logits; softmax is in the loss).
        in_chans: input channels.
        input_size: square input side; the first Dense layer is sized for it.
    """
    check_num_classes(num_classes)
    check_in_chans(in_chans)
    side = conv_output_size(conv_output_size(_check_size(input_size, 4), 2, 2), 2, 2)
    flat = 64 * side * side
    features = OrderedDict(
        conv1=Conv2D(32, 3, padding="same", activation="relu", in_channels=in_chans),
        pool1=MaxPool2D(2),
        conv2=Conv2D(64, 3, padding="same", activation="relu", in_channels=32),
        pool2=MaxPool2D(2),
    )
    head = OrderedDict(
        flatten=Flatten(),
        dense1=Dense(100, activation="relu", in_features=flat),
        dropout=Dropout(0.4),
        classifier=Dense(num_classes, in_features=100) if num_classes else nn.Identity(),
    )
    info = [FeatureInfo("features.pool1", 32, 2), FeatureInfo("features.pool2", 64, 4)]
    return SequentialCNN(features, head, info, (in_chans, input_size, input_size), num_classes, 100)


@register_model(
    input_size=(1, 28, 28),
    description="Géron ch. 14 Fashion-MNIST CNN: conv 64 (7×7), 2×128, 2×256, dense 128/64, he_normal",
)
def geron_fashion_cnn(*, num_classes: int = 10, in_chans: int = 1, input_size: int = 28) -> SequentialCNN:
    """The 1,413,834-parameter CNN of Hands-On ML ch. 14 (DefaultConv2D: 3×3, same, relu, he_normal).

    The book ends in a softmax Dense layer; here the last layer returns logits and the softmax
    lives in the loss, which has the same parameters and the same predictions.
    """
    check_num_classes(num_classes)
    check_in_chans(in_chans)

    def conv(filters: int, in_ch: int, kernel: int = 3) -> Conv2D:
        return Conv2D(
            filters,
            kernel,
            padding="same",
            activation="relu",
            kernel_initializer="he_normal",
            in_channels=in_ch,
        )

    side = _check_size(input_size, 8)
    for _ in range(3):
        side = conv_output_size(side, 2, 2)
    features = OrderedDict(
        conv1=conv(64, in_chans, 7),
        pool1=MaxPool2D(2),
        conv2=conv(128, 64),
        conv3=conv(128, 128),
        pool2=MaxPool2D(2),
        conv4=conv(256, 128),
        conv5=conv(256, 256),
        pool3=MaxPool2D(2),
    )
    head = OrderedDict(
        flatten=Flatten(),
        dense1=Dense(128, activation="relu", kernel_initializer="he_normal", in_features=256 * side * side),
        dropout1=Dropout(0.5),
        dense2=Dense(64, activation="relu", kernel_initializer="he_normal", in_features=128),
        dropout2=Dropout(0.5),
        classifier=Dense(num_classes, in_features=64) if num_classes else nn.Identity(),
    )
    info = [
        FeatureInfo("features.pool1", 64, 2),
        FeatureInfo("features.pool2", 128, 4),
        FeatureInfo("features.pool3", 256, 8),
    ]
    return SequentialCNN(features, head, info, (in_chans, input_size, input_size), num_classes, 64)


@register_model(
    input_size=(3, 200, 300),
    description="Géron ch. 14 exercise: three 3×3 stride-2 'same' convs (100/200/400 maps) on 200×300 RGB",
)
def exercise_cnn(*, num_classes: int = 0, in_chans: int = 3) -> SequentialCNN:
    """The parameter/RAM exercise of Hands-On ML ch. 14: 903,400 parameters without a head.

    With ``num_classes > 0`` a global-average-pool + Dense classifier is added after the convs.
    """
    check_num_classes(num_classes)
    check_in_chans(in_chans)
    features = OrderedDict(
        conv1=Conv2D(100, 3, strides=2, padding="same", activation="relu", in_channels=in_chans),
        conv2=Conv2D(200, 3, strides=2, padding="same", activation="relu", in_channels=100),
        conv3=Conv2D(400, 3, strides=2, padding="same", activation="relu", in_channels=200),
    )
    head = OrderedDict(
        pool=GlobalAvgPool2D(),
        classifier=Dense(num_classes, in_features=400) if num_classes else nn.Identity(),
    )
    info = [
        FeatureInfo("features.conv1", 100, 2),
        FeatureInfo("features.conv2", 200, 4),
        FeatureInfo("features.conv3", 400, 8),
    ]
    model = SequentialCNN(features, head, info, (in_chans, 200, 300), num_classes, 400)
    if not num_classes:
        # The exercise asks about the conv stack alone: its output is the last feature map.
        model.head = nn.Sequential(OrderedDict(classifier=nn.Identity()))
    return model
