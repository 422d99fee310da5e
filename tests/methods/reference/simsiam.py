"""Port of facebookresearch/simsiam: ``simsiam/builder.py`` (``SimSiam.forward`` returns
``p1, p2, z1.detach(), z2.detach()``) and ``main_simsiam.py`` (``criterion = CosineSimilarity``,
``loss = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5``)."""
from __future__ import annotations

import torch


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    cos = torch.nn.CosineSimilarity(dim=1)
    return -0.5 * (cos(p1, z2.detach()).mean() + cos(p2, z1.detach()).mean())
