"""SyncBatchNorm that runs on the CPU (torch's ``nn.SyncBatchNorm`` accepts only GPU inputs).

Training-mode statistics are those of the global batch: per-channel sums and counts, then the
sums of squared deviations from the global mean, are all-reduced over the ranks (two passes, as
a single-process BatchNorm computes its variance). The gradient flows back through both
all-reduces, so each rank's input gradient is that of the sum of all ranks' losses, which DDP's
gradient average turns into the gradient of the global batch's mean loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _SumAcrossRanks(torch.autograd.Function):
    """all_reduce(SUM) whose backward is all_reduce(SUM) of the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class SyncBatchNormCPU(_BatchNorm):
    """BatchNorm over N-d inputs Tensor[N, C, ...] with the global batch's statistics in
    training (a plain BatchNorm outside a process group or in eval mode).

    Its parameters and buffers are those of ``nn.BatchNorm2d`` (same state-dict keys).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        synced = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not synced:
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative moving average, as _BatchNorm does
                factor = 1.0 / float(self.num_batches_tracked)
        dims = [0, *range(2, input.dim())]
        shape = [1, input.size(1)] + [1] * (input.dim() - 2)
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        local = x.numel() // max(x.size(1), 1)
        sums = _SumAcrossRanks.apply(torch.cat([x.sum(dims), x.new_tensor([float(local)])]))
        count = sums[-1]
        mean = sums[:-1] / count
        centered = x - mean.view(shape)
        var = _SumAcrossRanks.apply((centered * centered).sum(dims)) / count
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                n = float(count)
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                mean = mean.detach().to(self.running_mean.dtype)
                self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return out.to(input.dtype)


def convert_sync_batchnorm_cpu(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm layer replaced by a SyncBatchNormCPU that shares its
    parameters and buffers (an optimizer built on the old parameters keeps working)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNormCPU | nn.SyncBatchNorm):
        synced = SyncBatchNormCPU(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        synced.training = module.training
        for name, param in module.named_parameters(recurse=False):
            setattr(synced, name, param)
        for name, buffer in module.named_buffers(recurse=False):
            setattr(synced, name, buffer)
        return synced
    for name, child in module.named_children():
        converted = convert_sync_batchnorm_cpu(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


__all__ = ["SyncBatchNormCPU", "convert_sync_batchnorm_cpu"]
