"""A run's identity leaves out the parameters its form never reads (``Method.unread_params``), so
that, e.g., changing VICReg's loss scale does not invalidate finished grad-form runs. These tests
check every declaration against the computation: changing a parameter the form is said not to
read leaves its loss, its gradients and its state bit-identical over several steps."""
from __future__ import annotations

import pytest
import torch

from transfer.methods import METHODS, Views, build_method

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

D, N, STEPS = 8, 12, 3
CASES = [(m, f, p) for m in METHODS.names() for f in METHODS.get(m).forms for p in METHODS.get(m).unread_params(f)]


def _run(name: str, form: str, **params):
    torch.manual_seed(0)
    m = build_method(name, D, form=form, momentum=True, **params).double()
    pred = m.build_predictor(D, 16)
    pred = pred.double() if pred is not None else None
    g = torch.Generator().manual_seed(1)
    out = []
    for step in range(STEPS):
        z1, z2, t1, t2 = (torch.randn(N, D, generator=g, dtype=torch.float64) for _ in range(4))
        z1.requires_grad_(True), z2.requires_grad_(True)
        p1, p2 = (pred(z1), pred(z2)) if pred is not None else (None, None)
        loss, _ = m(Views(z1, z2, t1, t2, p1, p2), step)
        g1, g2 = torch.autograd.grad(loss, (z1, z2))
        out.append((loss.detach(), g1, g2, {k: b.clone() for k, b in m.named_buffers()}))
    return out


def test_declared_params_are_parameters():
    for n in METHODS.names():
        cls = METHODS.get(n)
        assert set(cls.loss_params) <= set(cls.defaults) and set(cls.grad_params) <= set(cls.defaults), n
        assert not set(cls.loss_params) & set(cls.grad_params), n


@pytest.mark.parametrize("name,form,param", CASES, ids=[f"{m}-{f}-{p}" for m, f, p in CASES])
def test_a_param_the_form_does_not_read_changes_nothing(name, form, param):
    v = METHODS.get(name).defaults[param]
    other = v + 2 if isinstance(v, int) else v * 1.7 + 0.3
    a, b = _run(name, form), _run(name, form, **{param: other})
    for step, ((la, g1a, g2a, sa), (lb, g1b, g2b, sb)) in enumerate(zip(a, b)):
        assert torch.equal(la, lb) and torch.equal(g1a, g1b) and torch.equal(g2a, g2b), f"step {step}: {param} changed the {form} form"
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), f"step {step}: {param} changed the state"


def test_params_of_the_other_form_do_change_it():
    """The declarations are not empty words: each parameter does change the form that reads it."""
    for name, form, param in CASES:
        reader = "grad" if form == "loss" else "loss"
        v = METHODS.get(name).defaults[param]
        other = v + 2 if isinstance(v, int) else v * 1.7 + 0.3
        a, b = _run(name, reader), _run(name, reader, **{param: other})
        assert any(not torch.equal(x[0], y[0]) or not torch.equal(x[1], y[1]) for x, y in zip(a, b)), (name, reader, param)
