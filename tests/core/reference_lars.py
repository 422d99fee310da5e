"""A reference LARS update, ported (in our own words, as plain functions) from facebookresearch/barlowtwins
``main.py`` (class ``LARS``, ``exclude_bias_and_norm`` and the two parameter groups built in ``main``),
commit 046eec3c7f5c098b42cdf43e04df332957637d6a. The same rule is SimSiam's ``simsiam/optimizer.py``
and MAE's ``util/lars.py``.

Per parameter ``w`` with gradient ``g``, Barlow Twins does:
  d = g + wd * w                          unless weight_decay_filter(w)      (filter: w.ndim == 1)
  d = d * q,  q = eta * ||w|| / ||d||     unless lars_adaptation_filter(w); q = 1 if ||w|| or ||d|| is 0
  mu = momentum * mu + d                  (mu starts at zero)
  w  = w - lr * mu
Barlow Twins passes ``exclude_bias_and_norm`` (ndim == 1) as both filters, so biases and norm
parameters get neither weight decay nor the trust ratio: plain SGD with momentum.

(pl_bolts / solo-learn ``solo/utils/lars.py`` use another trust ratio, eta ||w|| / (||g|| + wd ||w||),
the LARS paper's Eq. 6; this project follows the SimSiam / Barlow Twins / MAE form.)
"""
from __future__ import annotations

from typing import Dict, List

import torch


def excluded(w: torch.Tensor) -> bool:
    """Barlow Twins' ``exclude_bias_and_norm``: biases and BatchNorm/LayerNorm weights are 1-D."""
    return w.ndim == 1


@torch.no_grad()
def reference_lars_step(params: List[torch.Tensor], mu: Dict[int, torch.Tensor], lr: float,
                        weight_decay: float, momentum: float, eta: float) -> None:
    """One Barlow Twins LARS step over ``params`` (their ``.grad`` set), in place; ``mu`` maps
    ``id(param)`` to its momentum buffer and is filled on the first step."""
    for w in params:
        if w.grad is None:
            continue
        d = w.grad
        if not excluded(w):
            d = d + weight_decay * w
            w_norm, d_norm = w.norm(), d.norm()
            if w_norm > 0 and d_norm > 0:
                d = d * (eta * w_norm / d_norm)
        buf = mu.setdefault(id(w), torch.zeros_like(w))
        buf.mul_(momentum).add_(d)
        w.sub_(lr * buf)
