"""The unified-gradient claims, checked numerically (float64).

For every registered method with a gradient form: ``n * d reference_loss / du`` (targets held
fixed, i.e. stop-gradient) equals ``grad_rule + residual``; for exact methods the residual is
zero, for approximate ones it is the term the rule drops, stated in the method's docstring.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transfer.methods import METHODS, Bank, Views, build_method
from transfer.methods import rules
from transfer.methods.decorrelation import _offdiag

N, D = 24, 16


def _feats(seed: int):
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=1)
    # targets correlated with u so that softmaxes are not degenerate
    t1 = F.normalize(u + 0.5 * torch.randn(N, D, generator=g, dtype=torch.float64), dim=1)
    t2 = F.normalize(u + 0.5 * torch.randn(N, D, generator=g, dtype=torch.float64), dim=1)
    return u, t1, t2


def _method(name: str):
    m = build_method(name, D, form="grad" if "grad" in METHODS.get(name).forms else None)
    return m.double()


from transfer.methods.base import Method

# methods whose rule has a reference loss (VICReg's stated approximation has its own test below)
GRAD_METHODS = [n for n in METHODS.names()
                if "grad" in METHODS.get(n).forms and METHODS.get(n).reference_loss is not Method.reference_loss]


@pytest.mark.parametrize("name", GRAD_METHODS)
def test_rule_is_gradient_of_reference(name: str) -> None:
    m = _method(name)
    u, t1, t2 = _feats(0)
    m.update_state(t1, t2, step=0)  # F etc. from the targets
    m.update_state(t1.flip(0), t2, step=1)  # and one EMA step
    bank = Bank(u_all=u, pos_all=t2, self_all=t1, offset=0)
    g = m.grad_rule(u, t2, bank)
    uu = u.clone().requires_grad_(True)
    loss = m.reference_loss(uu, t2, Bank(u, t2, t1, 0))
    (auto,) = torch.autograd.grad(loss, uu)
    auto = auto * N
    expect = g + m.residual(u, t2, bank)
    rel = (auto - expect).norm() / auto.norm()
    assert rel < 1e-5, f"{name}: relative error {rel:.2e}"
    if m.equivalence == "exact":
        assert m.residual(u, t2, bank).abs().max() == 0
    else:  # the stated approximation is not vacuous: the rule alone differs from autograd
        assert (auto - g).norm() / auto.norm() > 1e-6


def test_every_method_is_checked() -> None:
    """No method escapes the equivalence checks: a reference loss, or VICReg's dedicated test."""
    assert set(METHODS.names()) - set(GRAD_METHODS) == {"vicreg"}


def test_every_method_has_both_forms_and_family() -> None:
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert set(cls.forms) == {"loss", "grad"}, name
        assert cls.family in {"unigrad", "contrastive", "asymmetric", "decorrelation"}, name
        assert cls.equivalence in {"exact", "approximate"}, name


def test_directpred_rule_exact_at_eps_zero() -> None:
    """With eps = 0 UniGrad's M = F/s_max equals W_p^T W_p: the rule is BYOL's exact gradient."""
    m = build_method("byol", D, form="grad", eps=0.0).double()
    u, t1, t2 = _feats(1)
    m.update_state(t1, t2, 0)
    bank = Bank(u, t2, t1, 0)
    assert m.residual(u, t2, bank).abs().max() < 1e-8
    uu = u.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(m.reference_loss(uu, t2, bank), uu)
    assert torch.allclose(auto * N, m.grad_rule(u, t2, bank), rtol=1e-5, atol=1e-8)


def test_vicreg_covariance_gradient_matches_decorrelation_rule_when_views_coincide() -> None:
    """Stated approximation: VICReg's covariance-term gradient is
    ``4 nu / (d (N-1)) offdiag(Cov) z_n``; the decorrelation rule's negative term is ``C pos_n``
    with the cross-branch ``C = U^T Pos / N``. With centred features and coinciding views
    (pos = u) the two agree up to the diagonal term and the factor ``4 nu N / (d (N-1)^2)``."""
    nu = 1.0
    u, _, _ = _feats(2)
    u = u - u.mean(0)
    uu = u.clone().requires_grad_(True)
    zc = uu - uu.mean(0)
    cov = zc.T @ zc / (N - 1)
    loss = nu * _offdiag(cov).pow(2).sum() / D
    (auto,) = torch.autograd.grad(loss, uu)
    m = build_method("vicreg", D, form="grad", grad_lambd=1.0).double()
    g = m.grad_rule(u, u, Bank(u, u, u, 0))  # 2 (-pos + C pos)
    neg = g / 2 + u  # C pos
    c = u.T @ u / N
    expect = 4 * nu * N / (D * (N - 1) ** 2) * (neg - u * torch.diagonal(c))
    assert torch.allclose(auto, expect, rtol=1e-6, atol=1e-10)
    # and with views that do not coincide the statement is only approximate
    _, t1, _ = _feats(3)
    g2 = m.grad_rule(u, t1, Bank(u, t1, t1, 0))
    assert not torch.allclose(g2, g, atol=1e-3)


def test_unigrad_loss_and_grad_forms_give_same_parameter_gradients() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(8, D).double()
    x1, x2 = torch.randn(N, 8, dtype=torch.float64), torch.randn(N, 8, dtype=torch.float64)
    t1, t2 = torch.randn(N, D, dtype=torch.float64), torch.randn(N, D, dtype=torch.float64)
    grads = {}
    for form in ("loss", "grad"):
        m = build_method("unigrad", D, form=form).double()
        head.zero_grad()
        loss, _ = m(Views(head(x1), head(x2), t1, t2), step=0)
        loss.backward()
        grads[form] = torch.cat([p.grad.flatten() for p in head.parameters()])
        F_ = m.F.clone()
    assert torch.allclose(grads["loss"], grads["grad"], rtol=1e-6, atol=1e-10)
    assert F_.abs().sum() > 0


def test_garrido_duality_identity() -> None:
    """``L_nc + sum_j ||K_j,:||^4 = L_c + sum_i ||K_:,i||^4`` on random matrices, and
    ``L_nc = L_c + N - M`` once rows and columns are normalised."""
    g = torch.Generator().manual_seed(0)
    for m_, n_ in [(5, 9), (16, 16), (32, 7)]:
        K = torch.randn(m_, n_, generator=g, dtype=torch.float64)
        lhs = rules.dimension_contrastive(K) + K.norm(dim=1).pow(4).sum()
        rhs = rules.sample_contrastive(K) + K.norm(dim=0).pow(4).sum()
        assert torch.allclose(lhs, rhs, rtol=1e-10)
    # doubly-normalised square matrix (Sinkhorn) -> N = M, L_nc = L_c
    K = torch.rand(12, 12, generator=g, dtype=torch.float64) + 0.1
    for _ in range(500):
        K = K / K.norm(dim=1, keepdim=True)
        K = K / K.norm(dim=0, keepdim=True)
    assert torch.allclose(rules.dimension_contrastive(K), rules.sample_contrastive(K), rtol=1e-6)


def test_contrastive_rule_matches_unigrad_reference_snippet() -> None:
    """SimCLR-grad with momentum equals UniGrad's ``loss_simclr_grad_mm`` gradient when the
    anchor's own target is kept as a negative (MoCo's candidate set = both views)."""
    u, t1, t2 = _feats(4)
    tau = 0.2
    cands = torch.cat([t1, t2], 0)
    w = torch.softmax(u @ cands.T / tau, 1)
    ref = (-t2 + w @ cands) / tau
    assert torch.allclose(rules.contrastive_grad(u, t2, cands, tau), ref)
