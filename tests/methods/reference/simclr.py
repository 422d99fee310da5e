"""NT-Xent as defined by Chen et al. 2020 (SimCLR, Algorithm 1): for the ``2N`` normalised
features, ``l(i, j) = -log exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau)`` and
``L = 1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)]``. Written as the 2N x 2N similarity matrix with
its diagonal removed. ``keys`` replaces the candidates by other features (the momentum variant:
the anchor's own key is the one left out); ``score`` maps cosines of the *negatives* (Garrido et
al.'s SimCLR-abs / -sq apply ``|s|`` or ``s^2``) -- as in this package, it is applied to every
entry of the denominator."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def nt_xent(z1: Tensor, z2: Tensor, tau: float, keys: Optional[tuple] = None,
            score: Callable[[Tensor], Tensor] = lambda s: s) -> Tensor:
    a = F.normalize(torch.cat([z1, z2], 0), dim=1)
    b = a if keys is None else F.normalize(torch.cat([keys[0], keys[1]], 0), dim=1).detach()
    n = z1.shape[0]
    sims = a @ b.T
    logits = score(sims) / tau
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    positive = sims[torch.arange(2 * n), partner] / tau
    return (torch.logsumexp(logits, 1) - positive).mean()
