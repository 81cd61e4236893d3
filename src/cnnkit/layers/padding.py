"""All padding arithmetic of cnnkit: Keras 'valid' / 'same' and explicit integers.

Every layer resolves its padding through these functions, so the output-size formula that
the course teaches is the one the layers really use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ._checks import check_positive_int

PaddingArg = str | int | tuple[int, int]

PADDING_MODES = ("valid", "same")


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return pair


def check_padding(padding: PaddingArg) -> PaddingArg:
    """Validate a padding argument and return it normalised ('same', 'valid', int or pair).

    Raises:
        ValueError: for an unknown string or a negative number, naming the valid options.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in PADDING_MODES:
            raise ValueError(f"padding must be 'same', 'valid' or an int, got {padding!r}")
        return mode
    return _pair(padding, "padding")


def conv_output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: str | int = "valid",
    dilation: int = 1,
) -> int:
    """Output length of a convolution or pooling window along one axis.

    The course formula: ``floor((size + 2 * padding - effective_kernel) / stride) + 1`` with
    ``effective_kernel = dilation * (kernel - 1) + 1``. ``'valid'`` means no padding; ``'same'``
    pads like TensorFlow so the output is ``ceil(size / stride)``.

    Args:
        size: input length (rows or columns).
        kernel: window length.
        stride: step between windows.
        padding: ``'valid'``, ``'same'`` or the number of zeros added on each side.
        dilation: spacing between kernel taps.

    Returns:
        The output length.

    Raises:
        ValueError: for non-positive sizes or a window larger than the padded input.
    """
    for name, value in (("size", size), ("kernel", kernel), ("stride", stride), ("dilation", dilation)):
        check_positive_int(name, value)
    padding = check_padding(padding)
    if padding == "same":
        return math.ceil(size / stride)
    pad = 0 if padding == "valid" else padding[0]
    effective = dilation * (kernel - 1) + 1
    if size + 2 * pad < effective:
        raise ValueError(
            f"a window of {effective} does not fit an input of {size} with padding {pad}; "
            "use padding='same' or a smaller kernel"
        )
    return (size + 2 * pad - effective) // stride + 1


def same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """Zeros to add (before, after) along one axis for TensorFlow's 'same' padding.

    The total is whatever makes the output ``ceil(size / stride)``; an odd total puts the extra
    zero at the end (bottom/right), as TensorFlow and Keras do.
    """
    out = math.ceil(size / stride)
    effective = dilation * (kernel - 1) + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def static_same_padding(kernel: int, stride: int, dilation: int) -> int | None:
    """Symmetric padding valid for every input size, or None if 'same' depends on the size.

    With stride 1 and an odd effective kernel, 'same' is ``(k - 1) // 2`` on both sides whatever
    the input; otherwise the split depends on the input length and must be computed per call.
    """
    effective = dilation * (kernel - 1) + 1
    if stride == 1 and effective % 2 == 1:
        return (effective - 1) // 2
    return None


def pad_same_2d(
    height: int,
    width: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> tuple[int, int, int, int]:
    """F.pad argument (left, right, top, bottom) for 'same' padding of an H×W input."""
    top, bottom = same_padding(height, kernel[0], stride[0], dilation[0])
    left, right = same_padding(width, kernel[1], stride[1], dilation[1])
    return left, right, top, bottom
