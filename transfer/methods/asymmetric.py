"""Asymmetric family: BYOL, SimSiam (trained MLP predictor) and DirectPred (predictor set from
statistics).

Loss forms, each at its paper's scale (``loss_to_grad`` = ratio of the loss form's gradient to the
grad form's for the same predictor; ``tests/methods`` checks it):
- SimSiam (Chen & He 2021, facebookresearch/simsiam ``main_simsiam.py``):
  ``-(cos(p1, sg z2) + cos(p2, sg z1)) / 2`` -- ratio 1;
- BYOL (Grill et al. 2020, deepmind-research ``byol/byol_experiment.py``): ``2 - 2 cos`` of each
  view's prediction with the other view's target, *summed* over the two directions -- ratio 4;
- DirectPred (Tian et al. 2021, facebookresearch/luckmatters ``ssl/real-dataset/byol_trainer.py``):
  ``-2 cos`` summed over the two directions (``regression_loss``) with the linear predictor
  ``W_p = U diag(clamp(sqrt(s/s_max) + eps, 1e-4)) U^T`` of ``F_hat``, the EMA (rate ``rho``) of the
  predictor input's correlation. As the released code, ``W_p`` of step ``k`` comes from the
  statistics of steps ``< k``: the loss uses the current ``W_p``; afterwards ``F_hat`` takes this
  batch and, every ``freq`` steps, ``W_p`` is recomputed (``regulate_predictor`` after the
  optimiser step). Before any statistics ``W_p = I`` (luckmatters starts from the layer's random
  init) -- ratio 4. ``predictor: linear | mlp`` replaces the analytic ``W_p`` by a *trained* linear
  or 2-layer predictor under the same loss: the paper's baselines (Tian et al. 2021, Table 1 and
  Sec. 6: "linear predictor" and "2-layer predictor", trained with gradient descent).
Gradient form for all three (UniGrad ``loss_byol_directpred_grad``): ``g = (-W_p pos + lam M u) /
||W_p u||`` with ``W_p`` from the target correlation ``F``; the surrogate averages the two views,
i.e. the scale of ``-(cos_1 + cos_2) / 2``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..dist import all_reduce_mean
from ..errors import UserError
from ..nn.heads import mlp
from . import rules
from .base import METHODS, Bank, Views
from .unigrad import CorrelationState

Tensor = torch.Tensor


def neg_cos(p: Tensor, t: Tensor) -> Tensor:
    """``mean_i -cos(p_i, sg t_i)``."""
    return -F.cosine_similarity(p, t.detach(), dim=1).mean()


def simsiam_loss(p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor) -> Tensor:
    """SimSiam's ``D(p1, z2) / 2 + D(p2, z1) / 2`` with ``D = -cos``."""
    return 0.5 * (neg_cos(p1, t2) + neg_cos(p2, t1))


def byol_loss(p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor) -> Tensor:
    """BYOL's symmetrised loss: ``(2 - 2 cos(p1, t2)) + (2 - 2 cos(p2, t1))``, batch means."""
    return (2 + 2 * neg_cos(p1, t2)) + (2 + 2 * neg_cos(p2, t1))


def directpred_loss(p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor) -> Tensor:
    """luckmatters' ``regression_loss``: ``-2 cos`` per direction, summed, batch mean."""
    return 2 * neg_cos(p1, t2) + 2 * neg_cos(p2, t1)


class Asymmetric(CorrelationState):
    family = "asymmetric"
    equivalence = "approximate"
    eps_key = "eps"
    #: d(loss form) / d(grad form) for the same linear predictor (eps = 0, where the rule is exact)
    loss_to_grad: float  # declared by each method (BYOL 4, SimSiam 1, DirectPred 4)

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
    """BYOL and SimSiam: an MLP predictor in the loss form, the DirectPred rule in the grad form.
    A subclass names its ``paper_loss``, its momentum default and its ``loss_to_grad``."""

    uses_predictor = True
    default_form = "loss"
    defaults = {"rho": 0.99, "eps": 0.3}
    grad_params = ("rho", "eps")  # the rule's F; the loss form trains its MLP predictor

    def build_predictor(self, dim: int, hidden: int):
        return mlp(dim, hidden, dim, 2) if self.form == "loss" else None

    @staticmethod
    def paper_loss(p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor) -> Tensor:
        raise NotImplementedError

    def loss_forward(self, v: Views, step: int):
        assert v.p1 is not None and v.p2 is not None, f"{self.name}'s loss form needs the online predictor"
        return self.paper_loss(v.p1, v.p2, v.t1, v.t2)


@METHODS.register("byol")
class BYOL(MLPPredictorMethod):
    name = "byol"
    default_momentum = True
    loss_to_grad = 4.0
    paper_loss = staticmethod(byol_loss)


@METHODS.register("simsiam")
class SimSiam(MLPPredictorMethod):
    name = "simsiam"
    default_momentum = False
    loss_to_grad = 1.0
    paper_loss = staticmethod(simsiam_loss)


@METHODS.register("directpred")
class DirectPred(Asymmetric):
    name = "directpred"
    default_form = "loss"
    default_momentum = True
    # loss form: DirectPred's best small-scale setting (rho 0.3, eps 0.1; Tian et al.); grad form:
    # UniGrad's BYOL/DirectPred-grad (rho 0.99, eps 0.3; seeds.md section 1)
    defaults = {"rho": 0.3, "eps": 0.1, "freq": 1, "grad_rho": 0.99, "grad_eps": 0.3, "predictor": "direct"}
    rho_key, eps_key = "grad_rho", "grad_eps"
    loss_params, grad_params = ("rho", "eps", "freq"), ("grad_rho", "grad_eps")
    loss_to_grad = 4.0
    #: the loss form's predictor: set from statistics, or one of the trained baselines
    PREDICTORS = ("direct", "linear", "mlp")

    def __init__(self, dim: int, **kw) -> None:
        super().__init__(dim, **kw)
        self.register_buffer("F_hat", torch.zeros(dim, dim, dtype=torch.float32))
        self.register_buffer("Wp", torch.eye(dim, dtype=torch.float32))
        self.register_buffer("F_hat_initialised", torch.zeros((), dtype=torch.bool))
        if self.hp["predictor"] not in self.PREDICTORS:
            raise UserError(f"directpred: predictor={self.hp['predictor']!r}; choose from {self.PREDICTORS}")

    def build_predictor(self, dim: int, hidden: int):
        if self.form != "loss" or self.hp["predictor"] == "direct":
            return None
        return nn.Linear(dim, dim, bias=False) if self.hp["predictor"] == "linear" else mlp(dim, hidden, dim, 2)

    def loss_forward(self, v: Views, step: int):
        if self.hp["predictor"] != "direct":  # a trained predictor: the online network applied it
            assert v.p1 is not None and v.p2 is not None, "directpred's trained predictor is missing"
            return directpred_loss(v.p1, v.p2, v.t1, v.t2)
        wp = self.Wp.clone()  # set from the statistics of earlier steps
        loss = directpred_loss(v.z1 @ wp.T, v.z2 @ wp.T, v.t1, v.t2)
        with torch.no_grad():
            f = torch.cat([v.z1.detach(), v.z2.detach()], 0)
            fb = all_reduce_mean(f.T @ f / f.shape[0])  # E_B[f f^T] over the global batch, not centred
            self.F_hat.copy_(rules.ema_update(self.F_hat, fb, float(self.hp["rho"]), bool(self.F_hat_initialised)))
            self.F_hat_initialised.fill_(True)
            if step % max(1, int(self.hp["freq"])) == 0:
                self.Wp.copy_(rules.directpred_predictor(self.F_hat, float(self.hp["eps"]))[0])
        return loss
