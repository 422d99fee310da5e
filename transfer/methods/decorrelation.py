"""Feature-decorrelation family: Barlow Twins, VICReg, and Garrido et al.'s VICReg-exp / -ctr.

Loss forms follow the papers: Barlow Twins (Zbontar et al. 2021, facebookresearch/barlowtwins
``main.py``: batch-standardised embeddings, cross-correlation over the global batch,
``sum (1 - C_ii)^2 + lambda sum_{i!=j} C_ij^2``); VICReg (Bardes et al. 2022,
facebookresearch/vicreg ``main_vicreg.py``: invariance 25, variance 25, covariance 1);
VICReg-exp / VICReg-ctr (Garrido et al. 2023: the covariance term replaced by
``(1/d) sum_i log sum_{j!=i} exp(C_ij / tau)``, on ``K`` resp. ``K^T``).

Gradient forms: UniGrad's decorrelation rule ``g = 2 (-pos + lambda C pos)``,
``C = U^T Pos / N`` (``loss_barlow_twins_grad_mm``) for Barlow Twins and VICReg; for VICReg-exp
the exact gradient of ``-u.pos + lambda (1/d) sum_i log sum_{j!=i} exp(C_ij / tau)`` with ``C`` the
cross-branch covariance at the embeddings' scale (``rules.embedding_covariance``: ``d`` times the
covariance of the normalised features, so that ``C / tau`` is O(1/tau) as in the paper and the
negative term is of the order of the positive one); the sample-side exp rule for VICReg-ctr.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dist import gather_nograd, gather_with_grad
from . import rules
from .base import METHODS, Bank, Method, Views


def _pair(v: Views, momentum: bool):
    """(a, b, c, d): loss(a, b) + loss(c, d) over the gathered global batch. With the momentum
    encoder the second member is the target of the other view; without it both views carry
    gradient (the original symmetric losses)."""
    a, c = gather_with_grad(v.z1), gather_with_grad(v.z2)
    if momentum:
        return a, gather_nograd(v.t2.detach()), c, gather_nograd(v.t1.detach())
    return a, c, c, a


def _offdiag(c: torch.Tensor) -> torch.Tensor:
    n = len(c)
    return c.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def batch_standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``BatchNorm1d(affine=False)`` in training mode: biased batch variance, ``eps = 1e-5``
    (Barlow Twins ``main.py`` standardises with that layer, synchronised over ranks)."""
    zc = z - z.mean(0)
    return zc / torch.sqrt(zc.pow(2).mean(0) + eps)


def barlow_twins_loss(za: torch.Tensor, zb: torch.Tensor, lambd: float) -> torch.Tensor:
    n = za.shape[0]
    c = batch_standardise(za).T @ batch_standardise(zb) / n
    return (1 - torch.diagonal(c)).pow(2).sum() + lambd * _offdiag(c).pow(2).sum()


def _var_cov(z: torch.Tensor):
    z = z - z.mean(0)
    var = F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()
    return var, z.T @ z / (z.shape[0] - 1)


def vicreg_loss(za: torch.Tensor, zb: torch.Tensor, sim: float, std: float, cov: float,
                exp_tau: float = 0.0) -> torch.Tensor:
    """VICReg; with ``exp_tau > 0`` the covariance term is Garrido's log-sum-exp (VICReg-exp)."""
    d = za.shape[1]
    va, ca = _var_cov(za)
    vb, cb = _var_cov(zb)
    if exp_tau > 0:
        eye = torch.eye(d, dtype=torch.bool, device=za.device)
        ct = sum(torch.logsumexp((c / exp_tau).masked_fill(eye, float("-inf")), 1).mean() for c in (ca, cb))
    else:
        ct = (_offdiag(ca).pow(2).sum() + _offdiag(cb).pow(2).sum()) / d
    # main_vicreg.py: std_loss = mean(relu(1 - std_x)) / 2 + mean(relu(1 - std_y)) / 2
    return sim * F.mse_loss(za, zb) + std * (va + vb) / 2 + cov * ct


def _splice(u: torch.Tensor, bank: Bank) -> torch.Tensor:
    """The global online bank with this rank's rows replaced by ``u`` (which carries gradient)."""
    i = bank.offset
    return torch.cat([bank.u_all[:i], u, bank.u_all[i + u.shape[0]:]], 0)


class Decorrelation(Method):
    family = "decorrelation"
    default_form = "loss"
    default_momentum = False

    def grad_rule(self, u, pos, bank: Bank):
        return rules.decorrelation_grad(u, pos, bank.u_all, bank.pos_all, float(self.hp["grad_lambd"]))


@METHODS.register("barlow_twins")
class BarlowTwins(Decorrelation):
    name = "barlow_twins"
    equivalence = "approximate"
    defaults = {"lambd": 0.0051, "grad_lambd": 50.0}
    loss_params, grad_params = ("lambd",), ("grad_lambd",)

    def reference_loss(self, u, pos, bank: Bank):
        return rules.barlow_reference(_splice(u, bank), bank.pos_all, float(self.hp["grad_lambd"]))

    def residual(self, u, pos, bank: Bank):
        i = bank.offset
        return rules.barlow_residual(bank.u_all, bank.pos_all, float(self.hp["grad_lambd"]))[i:i + u.shape[0]]

    def loss_forward(self, v: Views, step: int):
        a, b, c, d = _pair(v, self.momentum)
        lam = float(self.hp["lambd"])
        return 0.5 * (barlow_twins_loss(a, b, lam) + barlow_twins_loss(c, d, lam))


@METHODS.register("vicreg")
class VICReg(Decorrelation):
    """Grad form: the decorrelation rule. VICReg's own gradient has the same-branch covariance
    ``offdiag(Cov(Z1)) z1``; the rule uses the cross-branch ``C z2`` (UniGrad Sec. 3.3) -- equal
    when the views coincide; ``tests/methods`` checks that statement."""

    name = "vicreg"
    equivalence = "approximate"
    #: ``loss_scale`` multiplies the whole loss (the 25 : 25 : 1 ratio stays). Under LARS, VICReg's
    #: official optimiser (``main_vicreg.py``), the loss's scale does not matter; under plain SGD it is
    #: a step-size factor, and the covariance term (quartic in ``z``) makes the unscaled loss explode
    #: at the study's SGD lr 0.3 (NaN at step 17, ``docs/benchmarks.md``). 1 = the paper's loss.
    defaults = {"sim": 25.0, "std": 25.0, "cov": 1.0, "loss_scale": 1.0, "grad_lambd": 50.0}
    loss_params, grad_params = ("sim", "std", "cov", "loss_scale"), ("grad_lambd",)

    #: loss form on ``K^T`` (samples as dimensions) instead of ``K``
    transpose = False

    def loss_forward(self, v: Views, step: int):
        """The symmetrised VICReg loss; with a ``tau`` setting, the exp covariance term (VICReg-exp)."""
        a, b, c, d = (z.T if self.transpose else z for z in _pair(v, self.momentum))
        h = self.hp
        tau = float(h.get("tau", 0.0))
        both = vicreg_loss(a, b, h["sim"], h["std"], h["cov"], tau) + vicreg_loss(c, d, h["sim"], h["std"], h["cov"], tau)
        return 0.5 * float(h["loss_scale"]) * both

    def _lambd_tau(self):
        return float(self.hp["grad_lambd"]), float(self.hp["tau"])


@METHODS.register("vicreg_exp")
class VICRegExp(VICReg):
    name = "vicreg_exp"
    equivalence = Decorrelation.equivalence
    defaults = {"sim": 25.0, "std": 25.0, "cov": 1.0, "loss_scale": 1.0, "tau": 0.1, "grad_lambd": 1.0}

    def grad_rule(self, u, pos, bank: Bank):
        return rules.decorrelation_exp_grad(u, pos, bank.u_all, bank.pos_all, *self._lambd_tau())

    def reference_loss(self, u, pos, bank: Bank):
        return rules.decorrelation_exp_reference(_splice(u, bank), bank.pos_all, *self._lambd_tau())


@METHODS.register("vicreg_ctr")
class VICRegCtr(VICReg):
    """VICReg-exp applied to ``K^T``: samples play the role of dimensions (sample-contrastive)."""

    name = "vicreg_ctr"
    equivalence = Decorrelation.equivalence
    defaults = {"sim": 25.0, "std": 25.0, "cov": 1.0, "loss_scale": 1.0, "tau": 0.1, "grad_lambd": 1.0}
    transpose = True

    def grad_rule(self, u, pos, bank: Bank):
        return rules.sample_exp_grad(u, pos, bank.pos_all, bank.offset, *self._lambd_tau())

    def reference_loss(self, u, pos, bank: Bank):
        return rules.sample_exp_reference(u, pos, bank.pos_all, bank.offset, *self._lambd_tau())
