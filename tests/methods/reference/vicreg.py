"""Port of facebookresearch/vicreg ``main_vicreg.py`` (``VICReg.forward``): invariance
``F.mse_loss(x, y)``; after gathering, centre; variance ``mean(relu(1 - sqrt(var + 1e-4)))`` of
each branch, halved and added; covariance ``x^T x / (batch_size - 1)`` with its squared
off-diagonal summed and divided by the number of features, for both branches; weights
``sim_coeff, std_coeff, cov_coeff`` (25, 25, 1).

``cov_term`` is swappable so that Garrido et al.'s VICReg-exp (``garrido.py``) reuses the rest."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _off_diagonal(m: Tensor) -> Tensor:
    keep = ~torch.eye(m.shape[0], dtype=torch.bool)
    return m[keep]


def squared_cov_term(cov: Tensor) -> Tensor:
    return _off_diagonal(cov).pow(2).sum() / cov.shape[0]


def vicreg_loss(x: Tensor, y: Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
                cov_term: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    cov_term = cov_term or squared_cov_term
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    n = x.shape[0]
    cov_loss = cov_term(x.T @ x / (n - 1)) + cov_term(y.T @ y / (n - 1))
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss
