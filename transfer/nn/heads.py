"""Projector and predictor MLPs.

Projector as in UniGrad ``project/model.py`` (``_projection_mlp``): (Linear without bias + BN +
ReLU) x (layers - 1), then a final Linear. Predictor as in BYOL / SimSiam: Linear + BN + ReLU +
Linear (bottleneck hidden width).
"""
from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int, last_bn: bool = False) -> nn.Sequential:
    assert layers >= 1, f"an MLP needs at least one layer, got {layers}"
    mods = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, out_dim, bias=not last_bn))
    if last_bn:
        mods.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*mods)
