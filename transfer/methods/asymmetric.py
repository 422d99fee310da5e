"""Asymmetric family: BYOL, SimSiam (trained MLP predictor) and DirectPred (predictor set from
statistics).

Loss forms: BYOL (Grill et al. 2020) ``2 - 2 cos(p1, t2)`` symmetrised, with the momentum encoder;
SimSiam (Chen & He 2021) the same without it (stop-gradient online targets); DirectPred
(Tian et al. 2021, luckmatters ``ssl/real-dataset``) with a linear predictor
``W_p = U diag(sqrt(s/s_max) + eps) U^T`` from the eigen-decomposition of ``F_hat``, the EMA of
the predictor input's correlation, recomputed every ``freq`` steps.
Gradient form for all three (UniGrad ``loss_byol_directpred_grad``):
``g = (-W_p pos + lam M u) / ||W_p u||`` with ``W_p`` from the target correlation ``F``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dist import all_reduce_mean
from ..nn.heads import mlp
from . import rules
from .base import METHODS, Bank, Views
from .unigrad import CorrelationState


def byol_loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (2 - 2 * F.cosine_similarity(p, t.detach(), dim=1)).mean()


class Asymmetric(CorrelationState):
    family = "asymmetric"
    equivalence = "approximate"
    eps_key = "eps"

    def update_state(self, t1, t2, step):
        super().update_state(t1, t2, step)
        # one eigen-decomposition per step, shared by both views' rules
        wp, M, _ = rules.directpred_predictor(self.F, float(self.hp[self.eps_key]))
        self._wpm = (wp, M)

    def _wp_m(self):
        return self._wpm

    def grad_rule(self, u, pos, bank: Bank):
        wp, M = self._wp_m()
        return rules.directpred_grad(u, pos, wp, M)

    def reference_loss(self, u, pos, bank: Bank):
        wp, _ = self._wp_m()
        return rules.asymmetric_reference(u, pos, wp)

    def residual(self, u, pos, bank: Bank):
        wp, M = self._wp_m()
        return rules.directpred_grad(u, pos, wp, wp.T @ wp) - rules.directpred_grad(u, pos, wp, M)


class MLPPredictorMethod(Asymmetric):
    uses_predictor = True

    def build_predictor(self, dim: int, hidden: int):
        return mlp(dim, hidden, dim, 2) if self.form == "loss" else None

    def loss_forward(self, v: Views, step: int):
        assert v.p1 is not None and v.p2 is not None, f"{self.name}'s loss form needs the online predictor"
        return 0.5 * (byol_loss(v.p1, v.t2) + byol_loss(v.p2, v.t1))


@METHODS.register("byol")
class BYOL(MLPPredictorMethod):
    name = "byol"
    default_form = "loss"
    default_momentum = True
    defaults = {"rho": 0.99, "eps": 0.3}


@METHODS.register("simsiam")
class SimSiam(MLPPredictorMethod):
    name = "simsiam"
    default_form = "loss"
    default_momentum = False
    defaults = {"rho": 0.99, "eps": 0.3}


@METHODS.register("directpred")
class DirectPred(Asymmetric):
    name = "directpred"
    default_form = "loss"
    default_momentum = True
    # loss form: DirectPred's best small-scale setting (rho 0.3, eps 0.1; Tian et al.); grad form:
    # UniGrad's BYOL/DirectPred-grad (rho 0.99, eps 0.3; seeds.md section 1)
    defaults = {"rho": 0.3, "eps": 0.1, "freq": 1, "grad_rho": 0.99, "grad_eps": 0.3}
    rho_key, eps_key = "grad_rho", "grad_eps"

    def __init__(self, dim: int, **kw) -> None:
        super().__init__(dim, **kw)
        self.register_buffer("F_hat", torch.zeros(dim, dim, dtype=torch.float32))
        self.register_buffer("Wp", torch.eye(dim, dtype=torch.float32))
        self.register_buffer("F_hat_initialised", torch.zeros((), dtype=torch.bool))

    def loss_forward(self, v: Views, step: int):
        with torch.no_grad():
            f = torch.cat([v.z1.detach(), v.z2.detach()], 0)
            fb = all_reduce_mean(f.T @ f / f.shape[0])  # E_B[f f^T] over the global batch, not centred
            self.F_hat.copy_(rules.ema_update(self.F_hat, fb, float(self.hp["rho"]), bool(self.F_hat_initialised)))
            self.F_hat_initialised.fill_(True)
            if step % max(1, int(self.hp["freq"])) == 0:
                s, U = torch.linalg.eigh(self.F_hat.double())
                s = s.clamp(min=0)
                p = (torch.sqrt(s / s.max().clamp(min=1e-12)) + float(self.hp["eps"])).clamp(min=1e-4)
                self.Wp.copy_(((U * p) @ U.T).to(self.Wp.dtype))
        p1, p2 = v.z1 @ self.Wp.T, v.z2 @ self.Wp.T
        return 0.5 * (byol_loss(p1, v.t2) + byol_loss(p2, v.t1))
