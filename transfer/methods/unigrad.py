"""UniGrad (Tao et al., CVPR 2022): ``dL/du1 = -u2^m + lambda F u1``, F = EMA of the target
correlation matrix. Follows UniGrad ``project/pretrainer.py`` (``loss_unigrad``)."""
from __future__ import annotations

import torch

from ..dist import all_reduce_mean
from . import rules
from .base import METHODS, Bank, Method, Views, _fp32


class CorrelationState(Method):
    """Methods that keep ``F`` (fp32 buffer, all-reduced, checkpointed)."""

    rho_key = "rho"

    def __init__(self, dim: int, **kw) -> None:
        super().__init__(dim, **kw)
        self.register_buffer("F", torch.zeros(dim, dim, dtype=torch.float32))
        self.register_buffer("F_initialised", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update_state(self, t1: torch.Tensor, t2: torch.Tensor, step: int) -> None:
        # this rank's targets; the mean over ranks of the local correlations is the global one
        # (equal local batches), and every rank then holds the same F (UniGrad ``loss_unigrad``).
        fb = all_reduce_mean(rules.correlation(_fp32(t1), _fp32(t2)))
        self.F.copy_(rules.ema_update(self.F, fb, float(self.hp[self.rho_key]), bool(self.F_initialised)))
        self.F_initialised.fill_(True)


@METHODS.register("unigrad")
class UniGrad(CorrelationState):
    name, family = "unigrad", "unigrad"
    default_momentum = True
    defaults = {"lambd": 100.0, "rho": 0.99}

    def grad_rule(self, u, pos, bank: Bank):
        return rules.unigrad_grad(u, pos, self.F, float(self.hp["lambd"]))

    def reference_loss(self, u, pos, bank: Bank):
        return rules.unigrad_reference(u, pos, self.F, float(self.hp["lambd"]))

    def loss_forward(self, v: Views, step: int):
        """The loss form ``-cos(u1, u2^m) + lambda/2 u1^T F u1`` (same parameter gradients)."""
        u1, u2 = torch.nn.functional.normalize(v.z1, dim=1), torch.nn.functional.normalize(v.z2, dim=1)
        with torch.no_grad():
            tn1 = torch.nn.functional.normalize(v.t1, dim=1)
            tn2 = torch.nn.functional.normalize(v.t2, dim=1)
            self.update_state(tn1, tn2, step)
        lam = float(self.hp["lambd"])
        return 0.5 * (rules.unigrad_reference(u1, tn2, self.F, lam) + rules.unigrad_reference(u2, tn1, self.F, lam))
