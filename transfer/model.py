"""The siamese model: online network (backbone + projector [+ predictor]) and its momentum copy.

Momentum update as in UniGrad ``project/model.py`` (``_momentum_update_key_encoder``, done
before the target forward) with fused ``torch._foreach`` ops: ``m <- mm * m + (1 - mm) * o``.
"""
from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
from torch import nn

from .backbones import ResNetBackbone
from .nn.heads import mlp


class OnlineNet(nn.Module):
    def __init__(self, backbone: ResNetBackbone, projector: nn.Module, predictor: Optional[nn.Module]) -> None:
        super().__init__()
        self.backbone, self.projector, self.predictor = backbone, projector, predictor

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        if self.predictor is None:
            return z1, z2, None, None
        return z1, z2, self.predictor(z1), self.predictor(z2)


class TargetNet(nn.Module):
    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


class Siamese(nn.Module):
    """``online`` (trained) and ``momentum`` (EMA, or ``None`` when the method runs without it)."""

    def __init__(self, backbone: ResNetBackbone, proj_hidden: int, proj_dim: int, proj_layers: int,
                 predictor: Optional[nn.Module], use_momentum: bool) -> None:
        super().__init__()
        projector = mlp(backbone.feature_dim, proj_hidden, proj_dim, proj_layers)
        self.online = OnlineNet(backbone, projector, predictor)
        self.momentum: Optional[TargetNet] = None
        if use_momentum:
            self.momentum = TargetNet(copy.deepcopy(backbone), copy.deepcopy(projector))
            for p in self.momentum.parameters():
                p.requires_grad_(False)

    def online_target_params(self) -> Tuple[list, list]:
        assert self.momentum is not None
        o = list(self.online.backbone.parameters()) + list(self.online.projector.parameters())
        m = list(self.momentum.parameters())
        assert len(o) == len(m), "online and momentum networks differ"
        return o, m

    @torch.no_grad()
    def momentum_update(self, mm: float) -> None:
        if self.momentum is None:
            return
        o, m = self.online_target_params()
        torch._foreach_mul_(m, mm)
        torch._foreach_add_(m, o, alpha=1.0 - mm)
