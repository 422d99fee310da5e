"""The method interface: a loss ("original" form) and a gradient rule ("grad" form) per method.

A method sees, per step, the online projections ``z1, z2`` (with gradient), the optional
predictor outputs ``p1, p2``, and the targets ``t1, t2`` (momentum branch, or the online branch
under stop-gradient when the momentum encoder is off). In the ``grad`` form it returns UniGrad's
surrogate ``mean_i <stopgrad(g_i), u_i>`` whose gradient is the rule; in the ``loss`` form it
returns the method's own loss. Rule state (UniGrad's ``F``, DirectPred's ``F_hat``, MoCo's queue)
lives in fp32 buffers: checkpointed, restored, all-reduced over ranks.

Design after solo-learn (``solo/methods/base.py``: methods as small classes with a momentum
variant, a METHODS dict) and lightly (pure losses with loud shape asserts).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..dist import gather_nograd, rank
from ..errors import UserError
from ..registry import Registry
from ..suggest import did_you_mean

Tensor = torch.Tensor


@dataclass
class Views:
    z1: Tensor
    z2: Tensor
    t1: Tensor
    t2: Tensor
    p1: Optional[Tensor] = None
    p2: Optional[Tensor] = None


@dataclass
class Bank:
    """Global (all-ranks) tensors for one view's rule, all normalised and without gradient.

    ``u_all``: online features of this view; ``pos_all``: targets of the other view (row ``i`` is
    the positive of ``u_all[i]``); ``self_all``: targets of this view; ``offset``: global index of
    this rank's first row.
    """

    u_all: Tensor
    pos_all: Tensor
    self_all: Tensor
    offset: int


def _fp32(x: Tensor) -> Tensor:
    """Rules run in fp32 at least (AMP gives fp16/bf16 projections)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class Method(nn.Module):
    name: str = ""
    family: str = ""
    forms: Tuple[str, ...] = ("loss", "grad")
    default_form: str = "grad"
    default_momentum: bool  # every method declares it (no default: a missing one fails loudly)
    defaults: Dict[str, Any] = {}
    #: the loss form trains an MLP predictor on the online branch
    uses_predictor: bool = False
    #: "exact" when the grad form is the gradient of :meth:`reference_loss`, else "approximate"
    equivalence: str = "exact"
    #: parameters only one form reads (``tests/methods`` checks that the other form's loss and
    #: gradients ignore them); a run's identity leaves out those its form never reads
    loss_params: Tuple[str, ...] = ()
    grad_params: Tuple[str, ...] = ()

    @classmethod
    def unread_params(cls, form: Optional[str]) -> Tuple[str, ...]:
        """The parameters ``form`` (default: the method's) never reads."""
        return cls.grad_params if (form or cls.default_form) == "loss" else cls.loss_params

    def __init__(self, dim: int, form: Optional[str] = None, momentum: Optional[bool] = None, **params: Any) -> None:
        super().__init__()
        self.dim = dim
        self.form = form or self.default_form
        if self.form not in self.forms:
            raise UserError(f"method {self.name!r} has forms {self.forms}, not {self.form!r}")
        self.momentum = self.default_momentum if momentum is None else bool(momentum)
        unknown = set(params) - set(self.defaults)
        if unknown:
            k = sorted(unknown)[0]
            hint = did_you_mean(k, self.defaults)
            raise UserError(f"unknown parameter {k!r} for method {self.name!r}{hint}; known: {sorted(self.defaults)}")
        self.hp: Dict[str, Any] = {**self.defaults, **params}

    # ------------------------------------------------------------------ heads
    def build_predictor(self, dim: int, hidden: int) -> Optional[nn.Module]:
        """The online predictor for the loss form of BYOL / SimSiam; ``None`` elsewhere."""
        return None

    # ------------------------------------------------------------------ forward
    def forward(self, v: Views, step: int) -> Tuple[Tensor, Dict[str, Tensor]]:
        for t in (v.z1, v.z2, v.t1, v.t2):
            assert t.dim() == 2 and t.shape == v.z1.shape, f"projection shapes differ: {t.shape} vs {v.z1.shape}"
        with torch.autocast(device_type=v.z1.device.type, enabled=False):
            z1, z2, t1, t2 = (_fp32(x) for x in (v.z1, v.z2, v.t1, v.t2))
            p1 = _fp32(v.p1) if v.p1 is not None else None
            p2 = _fp32(v.p2) if v.p2 is not None else None
            vf = Views(z1, z2, t1, t2, p1, p2)
            if self.form == "grad":
                loss = self.grad_forward(vf, step)
            else:
                loss = self.loss_forward(vf, step)
            with torch.no_grad():
                u1, u2 = F.normalize(z1.detach(), dim=1), F.normalize(z2.detach(), dim=1)
                tn1, tn2 = F.normalize(t1, dim=1), F.normalize(t2, dim=1)
                pos_sim = 0.5 * ((u1 * tn2).sum(1).mean() + (u2 * tn1).sum(1).mean())
        return loss, {"pos_sim": pos_sim}

    def grad_forward(self, v: Views, step: int) -> Tensor:
        u1, u2 = F.normalize(v.z1, dim=1), F.normalize(v.z2, dim=1)
        with torch.no_grad():
            tn1, tn2 = F.normalize(v.t1.detach(), dim=1), F.normalize(v.t2.detach(), dim=1)
            u1d, u2d = u1.detach(), u2.detach()
            t1a, t2a = gather_nograd(tn1), gather_nograd(tn2)
            u1a, u2a = gather_nograd(u1d), gather_nograd(u2d)
            off = rank() * u1.shape[0]
            self.update_state(tn1, tn2, step)
            g1 = self.grad_rule(u1d, tn2, Bank(u1a, t2a, t1a, off))
            g2 = self.grad_rule(u2d, tn1, Bank(u2a, t1a, t2a, off))
            assert g1.shape == u1.shape and g2.shape == u2.shape, f"rule returned {g1.shape}, want {u1.shape}"
        return 0.5 * ((g1 * u1).sum(1).mean() + (g2 * u2).sum(1).mean())

    # ------------------------------------------------------------------ to implement
    def update_state(self, t1: Tensor, t2: Tensor, step: int) -> None:
        """Update rule state from this rank's normalised targets (all-reduced inside; grad form)."""

    def grad_rule(self, u: Tensor, pos: Tensor, bank: Bank) -> Tensor:
        raise NotImplementedError(f"{self.name} has no gradient form")

    def loss_forward(self, v: Views, step: int) -> Tensor:
        raise NotImplementedError(f"{self.name} has no loss form")

    def reference_loss(self, u: Tensor, pos: Tensor, bank: Bank) -> Tensor:
        """A loss of ``u`` alone (targets fixed) whose gradient the rule is (tests)."""
        raise NotImplementedError

    def residual(self, u: Tensor, pos: Tensor, bank: Bank) -> Tensor:
        """``n * dL_ref/du - g``: zero for exact rules, the stated dropped term otherwise."""
        return torch.zeros_like(u)


METHODS: Registry = Registry("method")


def build_method(name: str, dim: int, form: Optional[str] = None, momentum: Optional[bool] = None,
                 **params: Any) -> Method:
    cls = METHODS.get(name)
    return cls(dim, form=form, momentum=momentum, **params)
