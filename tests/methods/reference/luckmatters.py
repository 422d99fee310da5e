"""Port of DirectPred from facebookresearch/luckmatters ``ssl/real-dataset/byol_trainer.py`` with
the README's DirectPred command (linear predictor without bias or normalisation,
``predictor_reg=corr``, ``balance_type=boost_scale``, ``dyn_convert=2``, eps outside the power,
no zero-mean, ``use_l2_normalization``).

Per iteration (``BYOLTrainer.train`` / ``update``): the batch's ``mean f f^T`` over both views'
predictor inputs enters the ``Accumulator`` (first value taken as is, then EMA with
``dyn_lambda``); the predictions use the predictor weight as it stands; the loss is
``regression_loss`` (``-2 cos``) of both directions summed, averaged over the batch; after the
optimiser step ``regulate_predictor`` resets the weight from the accumulated correlation every
``predictor_freq`` iterations (``compute_w_corr``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


class DirectPredLuckmatters:
    def __init__(self, weight: Tensor, dyn_lambda: float, dyn_eps: float, freq: int = 1) -> None:
        self.weight = weight.clone()  # nn.Linear convention: prediction = f @ weight.T
        self.dyn_lambda, self.dyn_eps, self.freq = dyn_lambda, dyn_eps, freq
        self.cumulated: Optional[Tensor] = None
        self.niter = 0

    def _accumulate(self, d: Tensor) -> None:
        if self.cumulated is None:
            self.cumulated = d
        else:
            self.cumulated = self.dyn_lambda * self.cumulated + (1 - self.dyn_lambda) * d

    @staticmethod
    def regression_loss(x: Tensor, y: Tensor) -> Tensor:
        return -2 * (F.normalize(x, dim=1) * F.normalize(y, dim=1)).sum(dim=-1)

    def loss(self, before1: Tensor, before2: Tensor, target_of_view2: Tensor, target_of_view1: Tensor) -> Tensor:
        """``target_of_view2`` = the target network's output on view 2 (luckmatters calls it
        ``targets_to_view_1``: what the prediction of view 1 regresses to)."""
        outer = [torch.einsum("ni,nj->nij", b.detach(), b.detach()) for b in (before1, before2)]
        self._accumulate(torch.cat(outer, 0).mean(dim=0))
        pred1, pred2 = before1 @ self.weight.T, before2 @ self.weight.T
        per_sample = self.regression_loss(pred1, target_of_view2.detach())
        per_sample = per_sample + self.regression_loss(pred2, target_of_view1.detach())
        return per_sample.mean()

    def compute_w_corr(self, M: Tensor) -> Tensor:
        vals, vecs = torch.linalg.eig(M)  # ``torch.eig(M, eigenvectors=True)`` in the original
        D, Q = vals.real, vecs.real
        ev = D.clamp(0) / D.max()
        ev = (ev.pow(1 / 2) + self.dyn_eps).clamp(1e-4)
        return Q @ torch.diag(ev) @ Q.t()

    def after_optimizer_step(self) -> None:
        if self.freq > 0 and self.niter % self.freq == 0 and self.cumulated is not None:
            self.weight = self.compute_w_corr(self.cumulated)
        self.niter += 1
