"""Port of facebookresearch/barlowtwins ``main.py`` (``BarlowTwins.forward``): both projections
through ``BatchNorm1d(affine=False)`` (training mode, synchronised over ranks), ``c = bn(z1)^T
bn(z2) / batch_size`` (all-reduced), ``loss = sum (c_ii - 1)^2 + lambd * sum_{i != j} c_ij^2``."""
from __future__ import annotations

import torch
from torch import nn


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051) -> torch.Tensor:
    bn = nn.BatchNorm1d(z1.shape[1], affine=False).to(z1.dtype).train()
    c = bn(z1).T @ bn(z2) / z1.shape[0]
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off = c - torch.diag(torch.diagonal(c))
    return on_diag + lambd * off.pow(2).sum()
