"""Synchronised BatchNorm that also runs on CPU (gloo).

``torch.nn.SyncBatchNorm`` refuses CPU tensors ("expected input tensor to be on GPU"), yet the
multi-process equivalence test and CPU DDP users need batch statistics over the global batch.
This module all-reduces (count, sum, sum of squares) with a differentiable all-reduce, so its
forward and backward equal BatchNorm over the concatenated global batch. On GPU,
:func:`convert_sync_bn` uses torch's fused SyncBatchNorm instead.
"""
from __future__ import annotations

import torch
from torch import nn

from ..dist import all_reduce_sum_with_grad, world


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        n_local = x.numel() // x.shape[1]
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # fp32 at least (fp64 stays fp64)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims),
                           torch.full((1,), float(n_local), device=x.device)])
        stats = all_reduce_sum_with_grad(stats)
        c = x.shape[1]
        n = stats[-1].detach()
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / max(n - 1, 1), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_bn(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm by a synchronised one (torch's on CUDA, ours elsewhere)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
        if module.track_running_stats:
            out.running_mean.copy_(module.running_mean)
            out.running_var.copy_(module.running_var)
            out.num_batches_tracked.copy_(module.num_batches_tracked)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_bn(child, device))
    return out
