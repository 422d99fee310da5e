"""Garrido, Chen, Bardes, Najman, LeCun, "On the duality between contrastive and non-contrastive
self-supervised learning" (ICLR 2023), as published (no official code for these variants):

- VICReg-exp: VICReg (``vicreg.py``) with the covariance criterion replaced by
  ``(1/d) sum_i log sum_{j != i} exp(Cov_ij / tau)`` for each branch;
- VICReg-ctr: VICReg-exp applied to the transposed embeddings ``K^T`` (samples play the role of
  dimensions).

Their gradient forms have no reference code; following UniGrad's surrogate pattern they are
``mean_i <stopgrad(g_i), u_i>`` with ``g = N dL/du`` for the cross-branch criteria below, ``g``
taken here by autograd (independent of the package's closed forms).
"""
from __future__ import annotations

from typing import Callable

import torch

from .vicreg import vicreg_loss

Tensor = torch.Tensor


def exp_cov_term(tau: float) -> Callable[[Tensor], Tensor]:
    def term(cov: Tensor) -> Tensor:
        logits = (cov / tau).masked_fill(torch.eye(cov.shape[0], dtype=torch.bool), float("-inf"))
        return torch.logsumexp(logits, 1).sum() / cov.shape[0]

    return term


def vicreg_exp_loss(x: Tensor, y: Tensor, tau: float, sim: float = 25.0, std: float = 25.0, cov: float = 1.0) -> Tensor:
    return vicreg_loss(x, y, sim, std, cov, cov_term=exp_cov_term(tau))


def vicreg_ctr_loss(x: Tensor, y: Tensor, tau: float, sim: float = 25.0, std: float = 25.0, cov: float = 1.0) -> Tensor:
    return vicreg_loss(x.T, y.T, sim, std, cov, cov_term=exp_cov_term(tau))


def dimension_exp_criterion(u: Tensor, pos: Tensor, lambd: float, tau: float) -> Tensor:
    """``-mean u.pos + lambda (1/d) sum_i logsumexp_{j!=i}(C_ij / tau)``, ``C`` the cross-branch
    covariance rescaled to unit-variance embeddings (``d`` times that of unit vectors)."""
    n, d = u.shape
    c = d * (u - u.mean(0)).T @ (pos - pos.mean(0)) / (n - 1)
    return -(u * pos).sum(1).mean() + lambd * exp_cov_term(tau)(c)


def sample_exp_criterion(u: Tensor, pos: Tensor, lambd: float, tau: float) -> Tensor:
    """``mean_i [-u_i.pos_i + lambda log sum_{m != i} exp(u_i.pos_m / tau)]``."""
    logits = (u @ pos.T / tau).masked_fill(torch.eye(u.shape[0], dtype=torch.bool), float("-inf"))
    return (-(u * pos).sum(1) + lambd * torch.logsumexp(logits, 1)).mean()


def surrogate_from_criterion(criterion: Callable[[Tensor, Tensor], Tensor], z1: Tensor, z2: Tensor,
                             z1m: Tensor, z2m: Tensor) -> Tensor:
    """UniGrad's surrogate, both views averaged, with ``g = N d criterion / du`` (targets fixed)."""
    def one(z: Tensor, positive: Tensor) -> Tensor:
        leaf = z.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(criterion(leaf, positive.detach()), leaf)
        return (z * (g * z.shape[0]).detach()).sum(-1).mean()

    return 0.5 * (one(z1, z2m) + one(z2, z1m))


def infonce_kernel_criterion(cands: Tensor, tau: float, score: Callable[[Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """InfoNCE with scored candidates (SimCLR-abs / -sq), all candidates kept, as UniGrad's
    ``loss_simclr_grad_mm`` keeps them: ``mean_i [-u_i.pos_i + log sum_v exp(score(u_i.v)) ] / tau``
    (the ``1/tau`` on the positive as in ``grad = (pos_term + neg_term) / tau``)."""
    def crit(u: Tensor, pos: Tensor) -> Tensor:
        return (-(u * pos).sum(1) / tau + torch.logsumexp(score(u @ cands.T) / tau, 1)).mean()

    return crit
