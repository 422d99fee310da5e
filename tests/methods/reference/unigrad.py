"""Port of fundamentalvision/UniGrad ``project/pretrainer.py``: the ``Pretrainer.loss_*`` methods
(``loss_unigrad``, ``loss_simclr_grad_mm``, ``loss_byol_directpred_grad``,
``loss_barlow_twins_grad_mm``) for one process. Inputs are already L2-normalised, as
``Pretrainer.pretrain`` normalises ``z1, z2, z1m, z2m`` before calling the loss. The AMP casts
(``.half()`` on ``wp``) are left out: the tests run in float64.

Every loss is the surrogate ``mean_i <stopgrad(grad_i), z_i>`` averaged over the two views; the
state ``F`` (EMA of the target correlation) lives on the object, ``None`` before the first step.
"""
from __future__ import annotations

from typing import Optional

import torch

Tensor = torch.Tensor


def _surrogate(z: Tensor, grad: Tensor) -> Tensor:
    return (z * grad.detach()).sum(-1).mean()


class UniGradLosses:
    def __init__(self, lambd: float = 100.0, rho: float = 0.99, tau: float = 0.2, eps: float = 0.3) -> None:
        self.lambd, self.rho, self.tau, self.eps = lambd, rho, tau, eps
        self.F: Optional[Tensor] = None

    def _track_correlation(self, z1m: Tensor, z2m: Tensor) -> None:
        batch_corr = (z1m.t() @ z1m + z2m.t() @ z2m) / (2 * z1m.shape[0])  # all-reduce mean: 1 rank
        if self.F is None:
            self.F = batch_corr.detach()
        else:
            self.F = self.rho * self.F + (1 - self.rho) * batch_corr.detach()

    # ``loss_unigrad``
    def unigrad(self, z1: Tensor, z2: Tensor, z1m: Tensor, z2m: Tensor) -> Tensor:
        self._track_correlation(z1m, z2m)
        loss1 = _surrogate(z1, -z2m + self.lambd * z1 @ self.F)
        loss2 = _surrogate(z2, -z1m + self.lambd * z2 @ self.F)
        return 0.5 * (loss1 + loss2)

    # ``loss_simclr_grad_mm`` (``extra`` = MoCo's queue, which UniGrad does not have)
    def simclr_grad(self, z1: Tensor, z2: Tensor, z1m: Tensor, z2m: Tensor, extra: Optional[Tensor] = None) -> Tensor:
        cands = torch.cat([z1m, z2m], 0)  # gathered over ranks; every one kept
        if extra is not None:
            cands = torch.cat([cands, extra], 0)

        def one(z: Tensor, positive: Tensor) -> Tensor:
            weight = torch.softmax(z @ cands.t() / self.tau, dim=-1)
            return _surrogate(z, (-positive + weight @ cands) / self.tau)

        return 0.5 * (one(z1, z2m) + one(z2, z1m))

    # ``loss_byol_directpred_grad``
    def byol_directpred_grad(self, z1: Tensor, z2: Tensor, z1m: Tensor, z2m: Tensor) -> Tensor:
        self._track_correlation(z1m, z2m)
        u, s, vh = torch.linalg.svd(self.F)
        top = s.max()
        scaled = (torch.sqrt(s / top) + self.eps).clamp(min=1e-4)
        wp = u @ torch.diag(scaled) @ vh
        neg_mat = self.F / top + self.eps ** 2 * torch.eye(z1.shape[1], dtype=z1.dtype)

        def one(z: Tensor, positive: Tensor) -> Tensor:
            zw = z @ wp
            denom = torch.linalg.norm(zw, dim=-1, keepdim=True)
            neg = z @ neg_mat
            lam = (zw * positive).sum(-1, keepdim=True) / (neg * z).sum(-1, keepdim=True)
            return _surrogate(z, (-(positive @ wp) + lam * neg) / denom)

        return 0.5 * (one(z1, z2m) + one(z2, z1m))

    # ``loss_barlow_twins_grad_mm`` (``N`` = whole batch size, the online banks are ``z1, z2``)
    def barlow_grad(self, z1: Tensor, z2: Tensor, z1m: Tensor, z2m: Tensor) -> Tensor:
        n = z1.shape[0]
        z1_bank, z2_bank = z1.detach(), z2.detach()

        def one(z: Tensor, positive: Tensor, online_bank: Tensor) -> Tensor:
            neg = (positive @ positive.t()) @ online_bank / n  # target bank = the gathered targets
            return _surrogate(z, 2 * (-positive + self.lambd * neg))

        return 0.5 * (one(z1, z2m, z1_bank) + one(z2, z1m, z2_bank))


def unigrad_loss_form(losses: UniGradLosses, z1: Tensor, z2: Tensor, z1m: Tensor, z2m: Tensor) -> Tensor:
    """UniGrad's loss form (Tao et al. 2022, Eq. 12 integrated): per view
    ``mean_i [-z_i.pos_i + lambda/2 z_i^T F z_i]`` with the same ``F`` as ``loss_unigrad``."""
    losses._track_correlation(z1m, z2m)
    F_ = losses.F

    def one(z: Tensor, positive: Tensor) -> Tensor:
        return (-(z * positive).sum(-1) + 0.5 * losses.lambd * torch.einsum("nc,cd,nd->n", z, F_, z)).mean()

    return 0.5 * (one(z1, z2m) + one(z2, z1m))
