"""Semantic segmentation heads on any cnnkit backbone: FCN-32s/16s/8s and U-Net.

FCN (Long, Shelhamer & Darrell, 2015) turns a classifier into a fully convolutional network: the
dense layers become convolutions (``fc6``/``fc7``), a 1×1 "score" layer gives class scores at the
deepest stride, and learnable transposed convolutions initialised to bilinear interpolation
upsample them back to the input size. FCN-32s upsamples the deepest scores in one step; FCN-16s
first adds scores from the stage at half that stride (``pool4`` in VGG-16), FCN-8s also from the
stage at a quarter (``pool3``). The names are the paper's for a stride-32 backbone; on the course's
28-pixel CNNs (deepest stride 8) the same three heads use the stages at strides 8, 4 and 2.

U-Net (Ronneberger, Fischer & Brox, 2015) is the second family: its decoder climbs back through
*every* stride, concatenating the encoder's features at each level (including a small
full-resolution block on the image) instead of summing class scores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...models import Backbone, FeatureInfo, create_model

FCN_HEADS = ("fcn32s", "fcn16s", "fcn8s")
HEADS = (*FCN_HEADS, "unet")
# How many skip connections each FCN variant adds below the deepest stage.
_FCN_SKIPS = {"fcn32s": 0, "fcn16s": 1, "fcn8s": 2}


def bilinear_kernel(factor: int) -> torch.Tensor:
    """The 2-D kernel of ×``factor`` bilinear upsampling as a transposed convolution.

    Args:
        factor: integer upsampling factor (>= 1).

    Returns:
        Tensor[k, k] with ``k = 2 * factor - factor % 2``: the outer product of the 1-D tent
        ``1 - |i - c| / factor`` centred at ``c = (k - 1) / 2``. For factor 2 the 1-D taps are
        ``[0.25, 0.75, 0.75, 0.25]``.
    """
    _check_factor(factor, minimum=1)
    size = 2 * factor - factor % 2
    center = (size - 1) / 2
    taps = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(taps, taps).float()


def _check_factor(factor: int, minimum: int) -> int:
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < minimum:
        raise ValueError(f"upsampling factor must be an int >= {minimum}, got {factor!r}")
    return factor


class BilinearConvTranspose2d(nn.ConvTranspose2d):
    """Learnable ×``factor`` upsampling, initialised to bilinear interpolation.

    Kernel ``2f - f % 2``, stride ``f`` and padding ``(f - f % 2) / 2`` give exactly ``f * H`` rows
    and place every output pixel where ``F.interpolate(..., mode='bilinear',
    align_corners=False)`` samples; the two agree everywhere except the outermost ``f // 2``
    rows and columns, where interpolation repeats the edge pixel and this layer sees zeros.
    torch has no such initialiser (torchvision's FCN upsamples with a fixed ``F.interpolate``),
    so it is written here.

    Args:
        channels: input and output channels.
        factor: integer upsampling factor (>= 2).
        groups: 1 (every output channel may learn to mix all inputs; initialised to the identity
            mix, as in Long et al.) or ``channels`` (depthwise: cheap for wide feature maps).
        learnable: False freezes the bilinear weights.

    Shape:
        Tensor[N, channels, H, W] -> Tensor[N, channels, factor * H, factor * W].
    """

    def __init__(self, channels: int, factor: int, *, groups: int = 1, learnable: bool = True) -> None:
        _check_factor(factor, minimum=2)
        if groups not in (1, channels):
            raise ValueError(f"groups must be 1 or channels ({channels}), got {groups!r}")
        size = 2 * factor - factor % 2
        super().__init__(
            channels,
            channels,
            size,
            stride=factor,
            padding=(factor - factor % 2) // 2,
            groups=groups,
            bias=False,
        )
        self.factor = factor
        self.init_bilinear()
        self.weight.requires_grad_(learnable)

    @torch.no_grad()
    def init_bilinear(self) -> None:
        """Set the weights back to plain bilinear upsampling of each channel."""
        kernel = bilinear_kernel(self.factor).to(self.weight)
        self.weight.zero_()
        if self.groups == 1:
            for c in range(self.in_channels):
                self.weight[c, c] = kernel
        else:
            self.weight[:, 0] = kernel


def fit_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop or zero-pad ``x`` (Tensor[N, C, H, W]) at the bottom/right to ``size`` (H', W')."""
    h, w = int(size[0]), int(size[1])
    x = x[..., :h, :w]
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    if dh or dw:
        x = F.pad(x, (0, dw, 0, dh))
    return x


def stages_by_stride(feature_info: Sequence[FeatureInfo]) -> dict[int, int]:
    """Stride -> index of the deepest stage with that stride (e.g. ``{2: 0, 4: 1, 8: 2}``)."""
    return {info.stride: i for i, info in enumerate(feature_info)}


class FCNHead(nn.Module):
    """FCN-32s, FCN-16s or FCN-8s on the stages of a backbone.

    Args:
        feature_info: the backbone's stages, shallow to deep.
        num_classes: classes including background.
        variant: ``'fcn32s'``, ``'fcn16s'`` or ``'fcn8s'``.
        width: channels of the convolutional ``fc6``/``fc7``.
        dropout: channel dropout after ``fc6`` and ``fc7`` (the paper's 0.5 slows short schedules).

    Raises:
        ValueError: the backbone has no stage at a stride the variant needs.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        variant: str = "fcn8s",
        *,
        width: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if variant not in _FCN_SKIPS:
            raise ValueError(f"FCN variant must be one of {FCN_HEADS}, got {variant!r}")
        by_stride = stages_by_stride(feature_info)
        top_stride = max(by_stride)
        skips = _FCN_SKIPS[variant]
        wanted = [top_stride // 2**i for i in range(1, skips + 1)]
        if top_stride % 2**skips or any(s not in by_stride for s in wanted):
            usable = [v for v, n in _FCN_SKIPS.items() if n < skips]
            raise ValueError(
                f"{variant} needs backbone stages at strides {[top_stride, *wanted]}, but the "
                f"stages have strides {sorted(by_stride)}; use {' or '.join(usable)} or a deeper "
                "backbone"
            )
        self.variant = variant
        self.top_index = by_stride[top_stride]
        self.skip_indices = [by_stride[s] for s in wanted]
        top_channels = feature_info[self.top_index].channels
        # fc6/fc7 of Long et al. as convolutions (7×7 over VGG's 7×7 pool5; 3×3 suits the few
        # cells of a 64-pixel canvas at stride 8).
        self.fc = nn.Sequential(
            nn.Conv2d(top_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(width, width, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.score = nn.Conv2d(width, num_classes, 1)
        self.skip_scores = nn.ModuleList(
            nn.Conv2d(feature_info[i].channels, num_classes, 1) for i in self.skip_indices
        )
        for layer in self.skip_scores:
            # Zero-initialised skip scores start the network as the coarser FCN (Long et al.).
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.skip_ups = nn.ModuleList(BilinearConvTranspose2d(num_classes, 2) for _ in wanted)
        self.output_stride = top_stride // 2**skips
        self.final_up: nn.Module = (
            BilinearConvTranspose2d(num_classes, self.output_stride)
            if self.output_stride > 1
            else nn.Identity()
        )

    def forward(self, stages: Sequence[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """Stage outputs (shallow to deep) -> logits Tensor[N, K, H, W] at the input's stride 1."""
        score = self.score(self.fc(stages[self.top_index]))
        for up, score_skip, index in zip(self.skip_ups, self.skip_scores, self.skip_indices):
            skip = score_skip(stages[index])
            score = fit_to(up(score), skip.shape[-2:]) + skip
        return fit_to(self.final_up(score), image.shape[-2:])


class _DoubleConv(nn.Sequential):
    """Two 3×3 'same' conv + BN + ReLU: U-Net's unit (BN is a later addition that speeds training)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNetHead(nn.Module):
    """A U-Net decoder on the backbone's stages (the backbone is the contracting path).

    From the deepest stage up, each level upsamples (bilinear-initialised depthwise transposed
    conv), concatenates the encoder's features at that stride and applies two 3×3 convs. If the
    backbone has no stride-1 stage, a small double conv on the image supplies the last level.

    Args:
        feature_info: the backbone's stages, shallow to deep.
        num_classes: classes including background.
        in_chans: image channels (for the full-resolution level).
        stem_width: channels of that full-resolution level.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        in_chans: int,
        *,
        stem_width: int = 16,
    ) -> None:
        super().__init__()
        by_stride = stages_by_stride(feature_info)
        strides = sorted(by_stride, reverse=True)
        self.top_index = by_stride[strides[0]]
        self.stem = _DoubleConv(in_chans, stem_width) if strides[-1] > 1 else None
        self.levels: list[int | None] = [by_stride[s] for s in strides[1:]]
        level_strides = strides[1:]
        if self.stem is not None:
            self.levels.append(None)  # None: the stem's features at stride 1
            level_strides.append(1)
        channels = feature_info[self.top_index].channels
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        previous = strides[0]
        for index, stride in zip(self.levels, level_strides):
            skip_channels = stem_width if index is None else feature_info[index].channels
            factor = previous // stride
            if factor * stride != previous:
                raise ValueError(
                    f"U-Net needs each stage's stride to divide the next one's; got strides "
                    f"{sorted(by_stride)}"
                )
            self.ups.append(
                BilinearConvTranspose2d(channels, factor, groups=channels) if factor > 1 else nn.Identity()
            )
            self.blocks.append(_DoubleConv(channels + skip_channels, skip_channels))
            channels, previous = skip_channels, stride
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, stages: Sequence[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """Stage outputs (shallow to deep) -> logits Tensor[N, K, H, W] at the input's stride 1."""
        x = stages[self.top_index]
        for up, block, index in zip(self.ups, self.blocks, self.levels):
            skip = self.stem(image) if index is None else stages[index]
            x = block(torch.cat([fit_to(up(x), skip.shape[-2:]), skip], dim=1))
        return fit_to(self.classifier(x), image.shape[-2:])


class Segmenter(nn.Module):
    """A backbone and a segmentation head: one class score per pixel, for any input size.

    The input is zero-padded at the bottom/right to a multiple of the deepest stride (so every
    stage halves exactly and the skips line up) and the logits are cropped back.

    Args:
        backbone: any cnnkit Backbone (its classifier is not used).
        head: an FCNHead or UNetHead built from ``backbone.feature_info``.
        head_name: the head's name (one of HEADS), kept for run folders.

    Shape:
        Tensor[N, C, H, W] -> logits Tensor[N, num_classes, H, W].
    """

    def __init__(self, backbone: Backbone, head: nn.Module, head_name: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.head_name = head_name
        self.pad_multiple = max(info.stride for info in backbone.feature_info)

    @property
    def num_classes(self) -> int:
        layer = self.head.classifier if isinstance(self.head, UNetHead) else self.head.score
        return layer.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.pad_multiple
        padded = F.pad(x, (0, (-w) % m, 0, (-h) % m)) if h % m or w % m else x
        logits = self.head(self.backbone.forward_stages(padded), padded)
        return logits[..., :h, :w]


def build_segmenter(
    model: str,
    head: str,
    num_classes: int,
    *,
    in_chans: int = 1,
    backbone_weights: str | os.PathLike[str] | None = None,
    **model_kwargs: object,
) -> Segmenter:
    """A registered backbone with a segmentation head.

    Args:
        model: a name from ``cnnkit.list_models()`` (e.g. ``'fashion_bn_cnn'``).
        head: one of HEADS.
        num_classes: classes including background (FashionScenes: 11).
        in_chans: image channels.
        backbone_weights: a trained classifier of the same model (run folder or state dict
            file) to start the backbone from (see ``load_backbone_weights``).
        **model_kwargs: options of the backbone's builder (e.g. ``small_input=True``).

    Raises:
        ValueError: unknown head or model (with the valid choices), a model that is not a
            Backbone, or a head the backbone's strides cannot support.
        WeightsError: backbone weights that do not fit.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (background + classes), got {num_classes!r}")
    backbone = create_model(model, num_classes=0, in_chans=in_chans, **model_kwargs)
    if not isinstance(backbone, Backbone) or not getattr(backbone, "feature_info", None):
        raise ValueError(f"{model} does not implement the Backbone interface with feature_info")
    if backbone_weights is not None:
        from ...models.surgery import load_backbone_weights

        load_backbone_weights(backbone, backbone_weights)
    if head == "unet":
        head_module: nn.Module = UNetHead(backbone.feature_info, num_classes, in_chans)
    else:
        head_module = FCNHead(backbone.feature_info, num_classes, head)
    return Segmenter(backbone, head_module, head)
