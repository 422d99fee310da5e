"""Ports of MoCo's losses.

- MoCo v2: facebookresearch/moco ``moco/builder.py`` (``MoCo.forward``: ``l_pos = q.k``,
  ``l_neg = q . queue``, logits over temperature, label 0, cross-entropy in ``main_moco.py``;
  ``_dequeue_and_enqueue`` writes the gathered keys at ``queue_ptr``, which must divide ``K``).
  The queue is kept as the official ``(dim, K)`` matrix of columns.
- MoCo v3: facebookresearch/moco-v3 ``moco/builder.py`` (``ctr_loss``: logits ``q k^T / T`` over all
  keys, labels = own index, cross-entropy times ``2 T``; ``forward`` sums both directions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


class MoCoV2:
    def __init__(self, queue_columns: Tensor, T: float) -> None:
        self.queue = queue_columns.clone()  # (dim, K), unit columns
        self.ptr = 0
        self.T = T

    def loss(self, q: Tensor, k: Tensor) -> Tensor:
        q = F.normalize(q, dim=1)
        k = F.normalize(k, dim=1).detach()
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long)
        out = F.cross_entropy(logits, labels)
        self._enqueue(k)
        return out

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        bs, K = keys.shape[0], self.queue.shape[1]
        assert K % bs == 0
        self.queue[:, self.ptr:self.ptr + bs] = keys.T
        self.ptr = (self.ptr + bs) % K


def moco_v3_loss(q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor, T: float) -> Tensor:
    def ctr(q: Tensor, k: Tensor) -> Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1).detach()
        logits = torch.einsum("nc,mc->nm", q, k) / T
        return F.cross_entropy(logits, torch.arange(q.shape[0])) * (2 * T)

    return ctr(q1, k2) + ctr(q2, k1)
