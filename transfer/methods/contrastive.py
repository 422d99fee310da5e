"""Contrastive family: SimCLR, MoCo, and Garrido et al.'s SimCLR-abs / SimCLR-sq.

Gradient form (UniGrad ``loss_simclr_grad_mm``): ``g = (-pos + sum_v s_v v) / tau`` over the
gathered candidates. Loss form: InfoNCE (SimCLR's NT-Xent; MoCo's query-key InfoNCE with an
optional queue, He et al. 2020). Candidates:
- SimCLR: all targets of both views, the anchor's own target excluded;
- MoCo: the other view's targets (the positive key and the batch's other keys) plus the queue.
Without the momentum encoder, SimCLR's loss form back-propagates through both views (the
original NT-Xent), gathered with correct gradients across ranks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dist import gather_nograd, gather_with_grad, rank
from . import rules
from .base import METHODS, Bank, Method, Views


@METHODS.register("simclr")
class SimCLR(Method):
    name, family = "simclr", "contrastive"
    default_form = "loss"
    default_momentum = False
    defaults = {"tau": 0.2}
    kernel = "id"

    def _cands(self, bank: Bank, n: int):
        cands = torch.cat([bank.pos_all, bank.self_all], 0)
        m = bank.pos_all.shape[0]
        mask = torch.zeros(n, cands.shape[0], dtype=torch.bool, device=cands.device)
        idx = torch.arange(n, device=cands.device)
        mask[idx, m + bank.offset + idx] = True  # the anchor's own target
        return cands, mask

    def grad_rule(self, u, pos, bank: Bank):
        cands, mask = self._cands(bank, u.shape[0])
        return rules.contrastive_grad(u, pos, cands, float(self.hp["tau"]), self.kernel, mask)

    def reference_loss(self, u, pos, bank: Bank):
        cands, mask = self._cands(bank, u.shape[0])
        return rules.contrastive_reference(u, pos, cands, float(self.hp["tau"]), self.kernel, mask)

    def loss_forward(self, v: Views, step: int):
        u1, u2 = F.normalize(v.z1, dim=1), F.normalize(v.z2, dim=1)
        if self.momentum:
            tn1, tn2 = F.normalize(v.t1.detach(), dim=1), F.normalize(v.t2.detach(), dim=1)
            a1, a2 = gather_nograd(tn1), gather_nograd(tn2)
        else:  # original NT-Xent: gradients through both views, gathered across ranks
            tn1, tn2 = u1, u2
            a1, a2 = gather_with_grad(u1), gather_with_grad(u2)
        off = rank() * u1.shape[0]
        l1 = self.reference_loss(u1, tn2, Bank(a1, a2, a1, off))
        l2 = self.reference_loss(u2, tn1, Bank(a2, a1, a2, off))
        return 0.5 * (l1 + l2)


@METHODS.register("simclr_abs")
class SimCLRAbs(SimCLR):
    """Garrido et al. (ICLR 2023) SimCLR-abs: negatives scored by |cos|."""

    name = "simclr_abs"
    kernel = "abs"


@METHODS.register("simclr_sq")
class SimCLRSq(SimCLR):
    """Garrido et al. (ICLR 2023) SimCLR-sq: negatives scored by cos^2."""

    name = "simclr_sq"
    kernel = "sq"


@METHODS.register("moco")
class MoCo(Method):
    name, family = "moco", "contrastive"
    default_form = "loss"
    default_momentum = True
    defaults = {"tau": 0.2, "queue_size": 0}

    def __init__(self, dim: int, **kw) -> None:
        super().__init__(dim, **kw)
        q = int(self.hp["queue_size"])
        self.register_buffer("queue", torch.zeros(q, dim, dtype=torch.float32))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_len", torch.zeros((), dtype=torch.long))

    def _cands(self, bank: Bank):
        n_q = int(self.queue_len)
        return torch.cat([bank.pos_all, self.queue[:n_q]], 0) if n_q else bank.pos_all

    def grad_rule(self, u, pos, bank: Bank):
        return rules.contrastive_grad(u, pos, self._cands(bank), float(self.hp["tau"]))

    def reference_loss(self, u, pos, bank: Bank):
        return rules.contrastive_reference(u, pos, self._cands(bank), float(self.hp["tau"]))

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        q = self.queue.shape[0]
        if q == 0:
            return
        keys = keys[-q:]
        p = int(self.queue_ptr)
        idx = (torch.arange(keys.shape[0], device=keys.device) + p) % q
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((p + keys.shape[0]) % q)
        self.queue_len.fill_(min(q, int(self.queue_len) + keys.shape[0]))

    def grad_forward(self, v: Views, step: int):
        loss = super().grad_forward(v, step)
        self._after(v)
        return loss

    def loss_forward(self, v: Views, step: int):
        u1, u2 = F.normalize(v.z1, dim=1), F.normalize(v.z2, dim=1)
        tn1, tn2 = F.normalize(v.t1.detach(), dim=1), F.normalize(v.t2.detach(), dim=1)
        a1, a2 = gather_nograd(tn1), gather_nograd(tn2)
        off = rank() * u1.shape[0]
        loss = 0.5 * (self.reference_loss(u1, tn2, Bank(gather_nograd(u1.detach()), a2, a1, off))
                      + self.reference_loss(u2, tn1, Bank(gather_nograd(u2.detach()), a1, a2, off)))
        self._after(v)
        return loss

    def _after(self, v: Views) -> None:
        with torch.no_grad():
            tn1, tn2 = F.normalize(v.t1.detach(), dim=1), F.normalize(v.t2.detach(), dim=1)
            self._enqueue(torch.cat([gather_nograd(tn1), gather_nograd(tn2)], 0))
