"""Optimisers (SGD, LARS) and per-iteration schedules as arrays (facebookresearch/dino
``utils.cosine_scheduler``; UniGrad ``project/pretrainer.py`` ``adjust_lr`` / ``adjust_mm``)."""
from __future__ import annotations

import math
from typing import Iterable, List

import numpy as np
import torch
from torch import nn


def lr_schedule(peak: float, total_steps: int, warmup_steps: int, min_ratio: float) -> np.ndarray:
    """Linear warm-up from ``min_ratio * peak`` to ``peak``, then cosine to ``min_ratio * peak``."""
    lo = peak * min_ratio
    s = np.arange(total_steps, dtype=np.float64)
    warm = lo + (peak - lo) * s / max(1, warmup_steps)
    k = np.clip(s - warmup_steps, 0, None) / max(1, total_steps - warmup_steps)
    cos = lo + 0.5 * (peak - lo) * (1 + np.cos(math.pi * k))
    return np.where(s < warmup_steps, warm, cos)


def momentum_schedule(base: float, end: float, total_steps: int) -> np.ndarray:
    """EMA momentum ``base -> end`` on a cosine (BYOL Eq. 9; UniGrad ``adjust_mm``)."""
    s = np.arange(total_steps, dtype=np.float64)
    return end - (end - base) * (np.cos(math.pi * s / max(1, total_steps)) + 1) / 2


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as used by SimSiam / BYOL linear eval and pretraining: SGD with
    momentum whose update is scaled by ``eta ||w|| / ||g + wd w||``; parameter groups with
    ``lars_exclude`` (biases and norms) get plain SGD without weight decay. ``eta`` = 0.001 is
    SimSiam's ``trust_coefficient``.
    Written after facebookresearch/simsiam ``simsiam/optimizer.py``; ``tests/core/test_lars.py`` checks it
    step for step against a port of facebookresearch/barlowtwins ``main.py`` ``LARS`` (the same rule)."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not g["lars_exclude"]:
                    d = d.add(p, alpha=g["weight_decay"])
                    pn, dn = torch.norm(p), torch.norm(d)
                    q = torch.where((pn > 0) & (dn > 0), g["eta"] * pn / dn, torch.ones_like(pn))
                    d = d.mul(q)
                buf = self.state[p].get("mu")
                if buf is None:
                    buf = self.state[p]["mu"] = torch.zeros_like(p)
                buf.mul_(g["momentum"]).add_(d)
                p.add_(buf, alpha=-g["lr"])
        return None


def param_groups(model: nn.Module, weight_decay: float) -> List[dict]:
    """Weights get decay; biases and norm parameters (1-D) do not, and are LARS-excluded."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
            {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}]


def build_optimizer(name: str, params: Iterable[dict], lr: float, momentum: float, eta: float) -> torch.optim.Optimizer:
    if name == "sgd":
        groups = [{k: v for k, v in g.items() if k != "lars_exclude"} for g in params]
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, foreach=True)
    if name == "lars":
        return LARS(list(params), lr=lr, momentum=momentum, eta=eta)
    raise ValueError(name)
