"""Contrastive family: SimCLR, MoCo, and Garrido et al.'s SimCLR-abs / SimCLR-sq.

Gradient forms (UniGrad ``project/pretrainer.py``, ``loss_simclr_grad_mm``, used there for both
SimCLR and MoCo): ``g = (-pos + sum_v s_v v) / tau``, ``s = softmax(u.v / tau)`` over the candidates
``N = [T1; T2]``: the targets of *both* views gathered over ranks, the anchor's own target kept
among them (nothing is masked). MoCo-grad appends its queue, if it has one, to ``N``.

Loss forms keep each paper's definition:
- SimCLR (Chen et al. 2020, NT-Xent): each of the ``2N`` features against the other ``2N - 1``
  (only the anchor itself is excluded); with the momentum encoder the candidates are the targets
  and the anchor's own target is the one excluded;
- MoCo v2 (He et al. 2020; Chen et al. 2020, facebookresearch/moco ``moco/builder.py``): the query
  of view 1 against the key of view 2 (positive) and the queue (negatives); the queue starts as
  random unit vectors and receives the gathered keys of view 2 after the loss (one view pair per
  step, as the official code). With ``queue_size = 0`` there is no MoCo v2 loss; the loss form is
  then MoCo v3's (facebookresearch/moco-v3 ``moco/builder.py``): ``2 tau [CE(q1, K2) + CE(q2, K1)]``
  over the gathered keys of the other view.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..dist import gather_nograd, gather_with_grad, rank
from . import rules
from .base import METHODS, Bank, Method, Views

Tensor = torch.Tensor


def anchor_mask(n: int, n_cands: int, column: int, device: torch.device) -> Tensor:
    """(n, n_cands) bool, True at ``(i, column + i)``: the one candidate row ``i`` must not see."""
    mask = torch.zeros(n, n_cands, dtype=torch.bool, device=device)
    idx = torch.arange(n, device=device)
    mask[idx, column + idx] = True
    return mask


def unigrad_candidates(bank: Bank, queue: Optional[Tensor] = None) -> Tensor:
    """UniGrad's ``N``: both views' gathered targets (plus a queue, if any); nothing masked."""
    parts = [bank.pos_all, bank.self_all] + ([queue] if queue is not None else [])
    return torch.cat(parts, 0)


@METHODS.register("simclr")
class SimCLR(Method):
    """Loss form: NT-Xent (Chen et al. 2020). Grad form: UniGrad ``loss_simclr_grad_mm``."""

    name, family = "simclr", "contrastive"
    default_form = "loss"
    default_momentum = False
    defaults = {"tau": 0.2}
    kernel = "id"

    def grad_rule(self, u, pos, bank: Bank):
        return rules.contrastive_grad(u, pos, unigrad_candidates(bank), float(self.hp["tau"]), self.kernel)

    def reference_loss(self, u, pos, bank: Bank):
        return rules.contrastive_reference(u, pos, unigrad_candidates(bank), float(self.hp["tau"]), self.kernel)

    def nt_xent(self, u: Tensor, pos: Tensor, bank: Bank) -> Tensor:
        """One view's NT-Xent: candidates ``[other view; this view]``, the anchor's own entry of
        this view (itself, or its own target under the momentum encoder) excluded."""
        cands = torch.cat([bank.pos_all, bank.self_all], 0)
        mask = anchor_mask(u.shape[0], cands.shape[0], bank.pos_all.shape[0] + bank.offset, u.device)
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
        l1 = self.nt_xent(u1, tn2, Bank(a1, a2, a1, off))
        l2 = self.nt_xent(u2, tn1, Bank(a2, a1, a2, off))
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


def random_queue(size: int, dim: int, seed: int = 0) -> Tensor:
    """MoCo's initial queue: ``size`` random unit vectors (``moco/builder.py`` normalises
    ``randn``); a fixed generator so that every rank and every resume starts from the same one."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(size, dim, generator=g, dtype=torch.float32), dim=1)


@METHODS.register("moco")
class MoCo(Method):
    """Loss form: MoCo v2 (``moco/builder.py``) with ``queue_size > 0``; MoCo v3's in-batch
    loss with ``queue_size = 0``. Grad form: UniGrad ``loss_simclr_grad_mm`` (+ the queue)."""

    name, family = "moco", "contrastive"
    default_form = "loss"
    default_momentum = True
    defaults = {"tau": 0.2, "queue_size": 0}

    def __init__(self, dim: int, **kw) -> None:
        super().__init__(dim, **kw)
        q = int(self.hp["queue_size"])
        self.register_buffer("queue", random_queue(q, dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        # kept for checkpoint compatibility: the queue is full (random keys) from the first step
        self.register_buffer("queue_len", torch.full((), q, dtype=torch.long))

    def grad_rule(self, u, pos, bank: Bank):
        return rules.contrastive_grad(u, pos, unigrad_candidates(bank, self.queue), float(self.hp["tau"]))

    def reference_loss(self, u, pos, bank: Bank):
        return rules.contrastive_reference(u, pos, unigrad_candidates(bank, self.queue), float(self.hp["tau"]))

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        """Overwrite the oldest entries with ``keys`` (a ring buffer, as ``_dequeue_and_enqueue``)."""
        q = self.queue.shape[0]
        if q == 0:
            return
        keys = keys[-q:]
        p = int(self.queue_ptr)
        idx = (torch.arange(keys.shape[0], device=keys.device) + p) % q
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((p + keys.shape[0]) % q)

    def grad_forward(self, v: Views, step: int):
        loss = super().grad_forward(v, step)
        with torch.no_grad():  # the grad form is symmetric in the views: both views' keys enter
            tn1, tn2 = F.normalize(v.t1.detach(), dim=1), F.normalize(v.t2.detach(), dim=1)
            self._enqueue(torch.cat([gather_nograd(tn1), gather_nograd(tn2)], 0))
        return loss

    def loss_forward(self, v: Views, step: int):
        tau = float(self.hp["tau"])
        q1, q2 = F.normalize(v.z1, dim=1), F.normalize(v.z2, dim=1)
        k1, k2 = F.normalize(v.t1.detach(), dim=1), F.normalize(v.t2.detach(), dim=1)
        if self.queue.shape[0] == 0:  # MoCo v3's in-batch loss over the gathered keys
            a1, a2 = gather_nograd(k1), gather_nograd(k2)
            is_pos = anchor_mask(q1.shape[0], a1.shape[0], rank() * q1.shape[0], q1.device)
            return 2 * tau * (moco_in_batch(q1, a2, is_pos, tau) + moco_in_batch(q2, a1, is_pos, tau))
        loss = moco_v2_loss(q1, k2, self.queue.clone(), tau)
        self._enqueue(gather_nograd(k2))
        return loss


def moco_v2_loss(q: Tensor, k: Tensor, queue: Tensor, tau: float) -> Tensor:
    """``CE([q.k, q.queue] / tau, label 0)`` averaged over the batch (``moco/builder.py``)."""
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / tau
    return torch.logsumexp(logits, 1).mean() - logits[:, 0].mean()


def moco_in_batch(q: Tensor, keys: Tensor, is_pos: Tensor, tau: float) -> Tensor:
    """InfoNCE of ``q`` against all gathered ``keys``; ``is_pos`` marks each row's positive."""
    logits = q @ keys.T / tau
    return (torch.logsumexp(logits, 1) - logits[is_pos]).mean()
