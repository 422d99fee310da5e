"""Distributed helpers that are correct under autograd (gloo on CPU, nccl on GPU).

The classic bug (peers.md, user request 5): gathering negatives with a plain ``all_gather``
drops the gradient that other ranks' losses send to this rank's features, or scales it by
1/world_size. :class:`GatherWithGrad` sums the incoming gradient over ranks in backward
(the reduce-scatter of the all-gather), so with DDP's gradient averaging the result equals a
single process with the global batch. Pattern as in lightly ``lightly/utils/dist.py`` and
solo-learn ``solo/utils/misc.py`` (``GatherLayer``).
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world() -> int:
    return dist.get_world_size() if is_dist() else 1


@torch.no_grad()
def gather_nograd(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` of every rank along dim 0 (rank order); no gradient."""
    if world() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, 0)


class GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.n = x.shape[0]
        out = [torch.empty_like(x) for _ in range(world())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, 0)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        g = g.contiguous().clone()
        dist.all_reduce(g)  # every rank's loss sends gradient to every rank's features
        r = rank()
        return g[r * ctx.n:(r + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    if world() == 1:
        return x
    return GatherWithGrad.apply(x)


class AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.contiguous().clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        g = g.contiguous().clone()
        dist.all_reduce(g)
        return g


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    return AllReduceSum.apply(x) if world() > 1 else x


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if world() == 1:
        return x
    x = x.contiguous().clone()
    dist.all_reduce(x)
    return x / world()


@torch.no_grad()
def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (e.g. a non-finite loss somewhere)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    if world() > 1:
        dist.all_reduce(t)
    return bool(t.item() > 0)
