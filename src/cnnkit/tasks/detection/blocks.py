"""Building blocks shared by the localization and detection heads: conv-BN-act, backbone probing,
and picking feature maps of given strides from any backbone."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class ConvBNAct(nn.Sequential):
    """3×3 (or k×k) convolution without bias, batch norm, SiLU; 'same' padding for odd k.

    Shape: Tensor[N, C_in, H, W] -> Tensor[N, C_out, ceil(H / stride), ceil(W / stride)].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.SiLU(inplace=True),
        )


@dataclass(frozen=True)
class MapInfo:
    """A feature map a backbone produces for a given input size.

    Attributes:
        index: position in ``forward_stages`` output; -1 for ``forward_features``.
        channels: feature channels.
        stride: input pixels per feature pixel.
        size: (h, w) of the map.
    """

    index: int
    channels: int
    stride: int
    size: tuple[int, int]


@torch.no_grad()
def probe_backbone(backbone: nn.Module, in_chans: int, image_size: int) -> tuple[list[MapInfo], MapInfo]:
    """Run one zero image through a backbone to learn its stage maps and final feature map.

    Args:
        backbone: a cnnkit Backbone (``forward_stages``, ``forward_features``).
        in_chans: input channels.
        image_size: side of the square input.

    Returns:
        (stage maps in ``feature_info`` order, the ``forward_features`` map).

    Raises:
        ValueError: the backbone is not a cnnkit Backbone or the input is too small for it.
    """
    if not hasattr(backbone, "forward_features") or not hasattr(backbone, "forward_stages"):
        raise ValueError(
            f"{type(backbone).__name__} is not a cnnkit Backbone (needs forward_features and "
            "forward_stages); build it with cnnkit.create_model"
        )
    was_training = backbone.training
    backbone.eval()
    try:
        x = torch.zeros(1, in_chans, image_size, image_size, device=_device_of(backbone))
        try:
            stages = backbone.forward_stages(x)
            final = backbone.forward_features(x)
        except RuntimeError as exc:
            raise ValueError(f"{image_size}x{image_size} input does not fit the backbone: {exc}") from None
    finally:
        backbone.train(was_training)

    def info(index: int, fmap: torch.Tensor) -> MapInfo:
        if fmap.dim() != 4:
            raise ValueError(f"backbone map {index} is not a [N, C, H, W] map: {tuple(fmap.shape)}")
        return MapInfo(
            index, fmap.shape[1], max(1, round(image_size / fmap.shape[-1])), tuple(fmap.shape[-2:])
        )

    return [info(i, s) for i, s in enumerate(stages)], info(-1, final)


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        if not isinstance(p, nn.parameter.UninitializedParameter):
            return p.device
    return torch.device("cpu")


class FeatureLevels(nn.Module):
    """Feature maps at the requested strides from any backbone, each with ``width`` channels.

    A stride one of the backbone's maps has is taken from that map (through a 1×1 ConvBNAct); a
    larger stride, a power-of-2 multiple of the deepest map's, is reached with stride-2 ConvBNAct
    steps from the deepest map, so a shallow course CNN (stride 4) can feed stride-8 and -16 heads.

    Args:
        backbone: a cnnkit Backbone.
        in_chans: input channels.
        image_size: side of the (square) training images.
        strides: output strides, increasing (e.g. ``(8,)`` or ``(8, 16)``).
        width: channels of every output map.

    Raises:
        ValueError: a stride neither a map has nor a power-of-2 multiple of the deepest one.
    """

    def __init__(
        self,
        backbone: nn.Module,
        in_chans: int,
        image_size: int,
        strides: tuple[int, ...],
        width: int,
    ) -> None:
        super().__init__()
        if not strides or list(strides) != sorted(set(strides)) or min(strides) < 1:
            raise ValueError(f"strides must be increasing, distinct and >= 1, got {strides!r}")
        self.backbone = backbone
        self.strides = tuple(int(s) for s in strides)
        stages, final = probe_backbone(backbone, in_chans, image_size)
        names = [info.name for info in getattr(backbone, "feature_info", [])]
        by_stride = {m.stride: m for m in [*stages, final]}  # later (deeper) maps win
        # Where each level comes from: ("stage", i), ("final", 0) or ("extra", k) for the k-th step.
        self.sources: list[tuple[str, int]] = []
        self.lateral = nn.ModuleList()
        self.extra = nn.ModuleList()
        chain_stride, chain_channels = final.stride, final.channels
        for s in self.strides:
            if s in by_stride and s <= final.stride:
                m = by_stride[s]
                self.sources.append(("final", 0) if m.index < 0 else ("stage", m.index))
                self.lateral.append(ConvBNAct(m.channels, width, 1))
                continue
            ratio = s // final.stride
            if s % final.stride or ratio & (ratio - 1):
                valid = sorted({m.stride for m in [*stages, final]})
                raise ValueError(
                    f"stride {s} is not available from {type(backbone).__name__}: its maps have "
                    f"strides {valid}; a larger stride must be {final.stride} times a power of 2"
                )
            while chain_stride < s:
                self.extra.append(ConvBNAct(chain_channels, width, 3, stride=2))
                chain_stride, chain_channels = chain_stride * 2, width
            self.sources.append(("extra", len(self.extra) - 1))
            self.lateral.append(nn.Identity())
        self._stage_names = [names[i] for kind, i in self.sources if kind == "stage"]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Tensor[N, C, H, W] -> one Tensor[N, width, H / s, W / s] per stride s."""
        return self.forward_with_final(x)[0]

    def forward_with_final(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Like ``forward``, and also the backbone's own ``forward_features`` map (one backbone run)."""
        stages: dict[int, torch.Tensor] = {}
        handles = []
        if self._stage_names:
            # Hooks, as Backbone.forward_stages uses, so that the backbone runs only once.
            modules = dict(self.backbone.named_modules())
            for kind, i in self.sources:
                if kind == "stage":
                    name = self.backbone.feature_info[i].name

                    def hook(_m: nn.Module, _i: object, out: torch.Tensor, key: int = i) -> None:
                        stages[key] = out

                    handles.append(modules[name].register_forward_hook(hook))
        try:
            final = self.backbone.forward_features(x)
        finally:
            for h in handles:
                h.remove()
        extra_maps = []
        y = final
        for step in self.extra:
            y = step(y)
            extra_maps.append(y)
        out = []
        for (kind, i), lateral in zip(self.sources, self.lateral):
            fmap = stages[i] if kind == "stage" else final if kind == "final" else extra_maps[i]
            out.append(lateral(fmap))
        return out, final
