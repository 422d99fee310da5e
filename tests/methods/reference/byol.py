"""Port of BYOL's loss (Grill et al. 2020, Eq. 2 and the symmetrised ``L + L~``;
deepmind/deepmind-research ``byol/byol_experiment.py`` adds the two directions' regression losses,
``byol/utils/helpers.py`` ``regression_loss = 2 - 2 cos``, then averages over the batch)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def regression_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    return 2 - 2 * (x * y).sum(-1)


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    per_sample = regression_loss(p1, t2.detach()) + regression_loss(p2, t1.detach())
    return per_sample.mean()
