"""Every method, in each form, against an independent port of its reference code
(``tests/methods/reference``): over 3 consecutive SGD steps of a small real network, with
distinct batches so that the state (``F``, ``F_hat``/``W_p``, the queue) evolves, the loss value,
every parameter gradient and that state equal the port's (float64).

Targets are produced the same way for both sides (an EMA copy of the network, or the online
output under stop-gradient), as the trainer does; what is compared is the method.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transfer.methods import METHODS, Views, build_method

from .reference import barlow_twins as ref_bt
from .reference import byol as ref_byol
from .reference import garrido as ref_garrido
from .reference import luckmatters as ref_lm
from .reference import moco as ref_moco
from .reference import simclr as ref_simclr
from .reference import simsiam as ref_simsiam
from .reference import unigrad as ref_ug
from .reference import vicreg as ref_vicreg

D_IN, HID, D, N = 10, 24, 16, 24
STEPS = 3
Tensor = torch.Tensor
# a port: (z1, z2, t1, t2, p1, p2) -> loss; ``after`` runs after each optimiser step
Port = Callable[..., Tensor]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D_IN, HID), nn.BatchNorm1d(HID), nn.ReLU(), nn.Linear(HID, D)).double()


def _predictor(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, HID), nn.BatchNorm1d(HID), nn.ReLU(), nn.Linear(HID, D)).double()


def _batch(step: int) -> Tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    return (x + 0.3 * torch.randn(N, D_IN, generator=g, dtype=torch.float64),
            x + 0.3 * torch.randn(N, D_IN, generator=g, dtype=torch.float64))


class Side:
    """One copy of network (+ predictor, + EMA target) and its optimiser."""

    def __init__(self, momentum: bool, predictor: bool) -> None:
        self.net = _net(0)
        self.pred = _predictor(1) if predictor else None
        self.ema = copy.deepcopy(self.net).requires_grad_(False) if momentum else None
        params = list(self.net.parameters()) + (list(self.pred.parameters()) if self.pred else [])
        self.params = params
        self.opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)

    def forward(self, x1: Tensor, x2: Tensor):
        z1, z2 = self.net(x1), self.net(x2)
        if self.ema is not None:
            with torch.no_grad():
                t1, t2 = self.ema(x1), self.ema(x2)
        else:
            t1, t2 = z1.detach(), z2.detach()
        p1 = self.pred(z1) if self.pred else None
        p2 = self.pred(z2) if self.pred else None
        return z1, z2, t1, t2, p1, p2

    def backward_step(self, loss: Tensor) -> List[Tensor]:
        self.opt.zero_grad()
        loss.backward()
        grads = [p.grad.detach().clone() for p in self.params]
        self.opt.step()
        if self.ema is not None:
            with torch.no_grad():
                for pe, po in zip(self.ema.parameters(), self.net.parameters()):
                    pe.mul_(0.9).add_(0.1 * po)
        return grads


def _unit(*zs: Tensor) -> List[Tensor]:
    return [F.normalize(z, dim=1) for z in zs]


# ------------------------------------------------------------------------- ports per case
def _with_state(port: Port, state: Callable[[], Dict[str, Optional[Tensor]]]) -> Port:
    """Attach the port's rule state (method buffer name -> the port's value) to compare after
    each step: the checkpointed state must be the reference's, not only what it implies."""
    port.state = state  # type: ignore[attr-defined]
    return port


def _ug(kind: str, **kw) -> Tuple[Port, Optional[Callable[[], None]]]:
    L = ref_ug.UniGradLosses(**kw)
    fn = {"unigrad": L.unigrad, "simclr": L.simclr_grad, "byol": L.byol_directpred_grad,
          "barlow": L.barlow_grad}[kind]
    return _with_state(lambda z1, z2, t1, t2, p1, p2: fn(*_unit(z1, z2, t1, t2)),
                       lambda: {"F": getattr(L, "F", None)}), None


def _garrido_grad(criterion: Callable[[Tensor, Tensor], Tensor]) -> Tuple[Port, None]:
    return (lambda z1, z2, t1, t2, p1, p2: ref_garrido.surrogate_from_criterion(criterion, *_unit(z1, z2, t1, t2))), None


def _kernel_grad(tau: float, score: Callable[[Tensor], Tensor]) -> Tuple[Port, None]:
    def port(z1, z2, t1, t2, p1, p2):
        u1, u2, k1, k2 = _unit(z1, z2, t1, t2)
        crit = ref_garrido.infonce_kernel_criterion(torch.cat([k1, k2], 0), tau, score)
        return ref_garrido.surrogate_from_criterion(crit, u1, u2, k1, k2)
    return port, None


SCORES: Dict[str, Callable[[Tensor], Tensor]] = {"simclr": lambda s: s, "simclr_abs": torch.abs, "simclr_sq": lambda s: s * s}


def port_for(name: str, form: str, momentum: bool, method) -> Tuple[Port, Optional[Callable[[], None]]]:
    h = method.hp
    if form == "grad":
        if name == "unigrad":
            return _ug("unigrad", lambd=h["lambd"], rho=h["rho"])
        if name == "simclr":
            return _ug("simclr", tau=h["tau"])
        if name in ("simclr_abs", "simclr_sq"):
            return _kernel_grad(h["tau"], SCORES[name])
        if name == "moco":
            L = ref_ug.UniGradLosses(tau=h["tau"])
            state = {"queue": method.queue.clone().double()}  # same random initial keys

            def port(z1, z2, t1, t2, p1, p2):
                u1, u2, k1, k2 = _unit(z1, z2, t1, t2)
                q = state["queue"]
                out = L.simclr_grad(u1, u2, k1, k2, extra=q if q.shape[0] else None)
                if q.shape[0]:  # both views' keys, oldest entries overwritten
                    state["queue"] = _ring(q, torch.cat([k1, k2], 0), state)
                return out
            state["ptr"] = 0
            return _with_state(port, lambda: {"queue": state["queue"]}), None
        if name in ("byol", "simsiam"):
            return _ug("byol", rho=h["rho"], eps=h["eps"])
        if name == "directpred":
            return _ug("byol", rho=h["grad_rho"], eps=h["grad_eps"])
        if name in ("barlow_twins", "vicreg"):
            return _ug("barlow", lambd=h["grad_lambd"])
        if name == "vicreg_exp":
            return _garrido_grad(lambda u, p: ref_garrido.dimension_exp_criterion(u, p, h["grad_lambd"], h["tau"]))
        if name == "vicreg_ctr":
            return _garrido_grad(lambda u, p: ref_garrido.sample_exp_criterion(u, p, h["grad_lambd"], h["tau"]))
    else:
        if name == "unigrad":
            L = ref_ug.UniGradLosses(lambd=h["lambd"], rho=h["rho"])
            return _with_state(lambda z1, z2, t1, t2, p1, p2: ref_ug.unigrad_loss_form(L, *_unit(z1, z2, t1, t2)),
                               lambda: {"F": L.F}), None
        if name in SCORES:
            return (lambda z1, z2, t1, t2, p1, p2: ref_simclr.nt_xent(
                z1, z2, h["tau"], keys=(t1, t2) if momentum else None, score=SCORES[name])), None
        if name == "moco":
            if int(h["queue_size"]) == 0:
                return (lambda z1, z2, t1, t2, p1, p2: ref_moco.moco_v3_loss(z1, z2, t1, t2, h["tau"])), None
            mv2 = ref_moco.MoCoV2(method.queue.clone().double().T, h["tau"])
            return _with_state(lambda z1, z2, t1, t2, p1, p2: mv2.loss(z1, t2), lambda: {"queue": mv2.queue.T}), None
        if name == "byol":
            return (lambda z1, z2, t1, t2, p1, p2: ref_byol.byol_loss(p1, p2, t1, t2)), None
        if name == "simsiam":
            return (lambda z1, z2, t1, t2, p1, p2: ref_simsiam.simsiam_loss(p1, p2, t1, t2)), None
        if name == "directpred":
            lm = ref_lm.DirectPredLuckmatters(torch.eye(D, dtype=torch.float64), h["rho"], h["eps"], int(h["freq"]))
            return _with_state(lambda z1, z2, t1, t2, p1, p2: lm.loss(z1, z2, t2, t1),
                               lambda: {"F_hat": lm.cumulated, "Wp": lm.weight}), lm.after_optimizer_step
        if name == "barlow_twins":
            return (lambda z1, z2, t1, t2, p1, p2: _sym(ref_bt.barlow_twins_loss, z1, z2, t1, t2, momentum, lambd=h["lambd"])), None
        if name == "vicreg":
            return (lambda z1, z2, t1, t2, p1, p2: h["loss_scale"] * _sym(ref_vicreg.vicreg_loss, z1, z2, t1, t2, momentum,
                                                       sim_coeff=h["sim"], std_coeff=h["std"], cov_coeff=h["cov"])), None
        if name == "vicreg_exp":
            return (lambda z1, z2, t1, t2, p1, p2: h["loss_scale"] * _sym(ref_garrido.vicreg_exp_loss, z1, z2, t1, t2, momentum, tau=h["tau"],
                                                       sim=h["sim"], std=h["std"], cov=h["cov"])), None
        if name == "vicreg_ctr":
            return (lambda z1, z2, t1, t2, p1, p2: h["loss_scale"] * _sym(ref_garrido.vicreg_ctr_loss, z1, z2, t1, t2, momentum, tau=h["tau"],
                                                       sim=h["sim"], std=h["std"], cov=h["cov"])), None
    raise KeyError(f"no reference port for {name}/{form}")


def _ring(q: Tensor, keys: Tensor, state: dict) -> Tensor:
    """Ring-buffer write at ``state['ptr']`` (``moco/builder.py`` ``_dequeue_and_enqueue``)."""
    q = q.clone()
    K = q.shape[0]
    for k in keys[-K:]:
        q[state["ptr"]] = k
        state["ptr"] = (state["ptr"] + 1) % K
    return q


def _sym(loss: Callable[..., Tensor], z1, z2, t1, t2, momentum: bool, **kw) -> Tensor:
    """The papers' symmetric losses take both online views; with the momentum encoder each online
    view is paired with the other view's target and the two directions averaged."""
    if not momentum:
        return loss(z1, z2, **kw)
    return 0.5 * (loss(z1, t2.detach(), **kw) + loss(z2, t1.detach(), **kw))


CASES = [(m, f, mom) for m in METHODS.names() for f in METHODS.get(m).forms for mom in (True, False)]
# 72 = 3 loss-form batches (MoCo asserts K % batch == 0), not a multiple of the grad form's 48 keys a
# step: the ring pointer takes values (24, 48; 48, 24) that a wrong wrap-around would misplace
CASES += [("moco", f, True, {"queue_size": 72}) for f in ("loss", "grad")]  # type: ignore[misc]
# the fmnist recipes' VICReg loss scale (a scale the port applies outside the official loss)
CASES += [(m, "loss", False, {"loss_scale": 0.1}) for m in ("vicreg", "vicreg_exp", "vicreg_ctr")]  # type: ignore[misc]


def _ids(c) -> str:
    return f"{c[0]}-{c[1]}-{'ema' if c[2] else 'noema'}" + (f"-{next(iter(c[3]))}" if len(c) > 3 else "")


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_method_equals_reference_port(case) -> None:
    name, form, momentum = case[:3]
    params = case[3] if len(case) > 3 else {}
    method = build_method(name, D, form=form, momentum=momentum, **params).double()
    port, after = port_for(name, form, momentum, method)
    uses_pred = method.uses_predictor and form == "loss"
    ours, ref = Side(momentum, uses_pred), Side(momentum, uses_pred)
    for step in range(STEPS):
        x1, x2 = _batch(step)
        loss_ours, _ = method(Views(*ours.forward(x1, x2)), step)
        loss_ref = port(*ref.forward(x1, x2))
        assert torch.allclose(loss_ours, loss_ref, rtol=1e-9, atol=1e-12), \
            f"step {step}: loss {float(loss_ours):.12g} vs reference {float(loss_ref):.12g}"
        g_ours, g_ref = ours.backward_step(loss_ours), ref.backward_step(loss_ref)
        for i, (a, b) in enumerate(zip(g_ours, g_ref)):
            assert torch.allclose(a, b, rtol=1e-7, atol=1e-10), \
                f"step {step}, parameter {i}: max |diff| {float((a - b).abs().max()):.3g}, max |ref| {float(b.abs().max()):.3g}"
        if after is not None:
            after()
        for k, v in getattr(port, "state", dict)().items():  # F, F_hat and W_p, the queue
            if v is not None and hasattr(method, k):
                mine = getattr(method, k)
                assert torch.allclose(mine, v.to(mine.dtype), rtol=1e-9, atol=1e-12), \
                    f"step {step}: state {k} max |diff| {float((mine - v).abs().max()):.3g}"
