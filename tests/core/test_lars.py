"""Our LARS (transfer/optim.py) against a port of Barlow Twins' update (tests/core/reference_lars.py):
same parameters after a few steps, biases and norms excluded from trust ratio and weight decay."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.core.reference_lars import reference_lars_step
from transfer.optim import build_optimizer, param_groups

LRS = (0.5, 0.8, 1.2, 0.3)  # a changing lr, as the schedule sets it each step
WD, MOMENTUM, ETA = 1e-2, 0.9, 0.02


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 5), nn.LayerNorm(5)).double()


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(8, 3, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randn(8, 5, generator=g, dtype=torch.float64)
    return ((model(x) - y) ** 2).mean()


def _ours(model: nn.Module) -> torch.optim.Optimizer:
    return build_optimizer("lars", param_groups(model, WD), lr=LRS[0], momentum=MOMENTUM, eta=ETA)


def test_matches_reference_after_several_steps():
    ours, ref = _model(), _model()
    opt, mu = _ours(ours), {}
    for s, lr in enumerate(LRS):
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        _loss(ours, s).backward()
        opt.step()
        ref.zero_grad()
        _loss(ref, s).backward()
        reference_lars_step(list(ref.parameters()), mu, lr, WD, MOMENTUM, ETA)
    moved = 0
    for (name, a), b, a0 in zip(ours.named_parameters(), ref.parameters(), _model().parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=name)
        moved += not torch.equal(a, a0)
    assert moved == len(list(ours.parameters()))  # every parameter took part


def test_first_step_scales_weights_and_leaves_biases_and_norms_plain():
    model = _model()
    before = copy.deepcopy(model)
    opt = _ours(model)
    _loss(model, 0).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    lr = LRS[0]
    for (n, p), p0 in zip(model.named_parameters(), before.parameters()):
        p, p0 = p.detach(), p0.detach()
        step = p0 - p
        if p.ndim == 1:  # bias / norm: plain SGD, no decay, no trust ratio (momentum buffer starts at 0)
            torch.testing.assert_close(step, lr * grads[n], rtol=1e-10, atol=1e-15, msg=n)
        else:  # weight: the update's norm is lr * eta * ||w||, along g + wd * w
            d = grads[n] + WD * p0
            assert float(step.norm()) == pytest.approx(lr * ETA * float(p0.norm()), rel=1e-12), n
            torch.testing.assert_close(step / step.norm(), d / d.norm(), rtol=1e-10, atol=1e-12, msg=n)


def test_ours_deviates_if_the_exclusion_is_dropped():
    """The comparison can fail: without the bias/norm exclusion the parameters differ from the port's."""
    ours, ref = _model(), _model()
    opt = build_optimizer("lars", [{"params": list(ours.parameters()), "weight_decay": WD, "lars_exclude": False}],
                          lr=LRS[0], momentum=MOMENTUM, eta=ETA)
    _loss(ours, 0).backward()
    opt.step()
    _loss(ref, 0).backward()
    reference_lars_step(list(ref.parameters()), {}, LRS[0], WD, MOMENTUM, ETA)
    assert any(not torch.allclose(a, b) for a, b in zip(ours.parameters(), ref.parameters()))
