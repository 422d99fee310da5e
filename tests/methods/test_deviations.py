"""One test per former deviation from the reference code (issue 13), each failing on the code
before the fix, plus the scale statements the docstrings make."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transfer.methods import Bank, Views, build_method
from transfer.methods import rules


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _realistic_views(n: int, d: int, seed: int = 0):
    """Projections of a UniGrad-shaped projector (Linear-BN-ReLU twice, then Linear; random init)
    of two noisy views of inputs with a low-dimensional latent structure, L2-normalised."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    d_in = 512
    x = torch.relu(torch.randn(n, 32, generator=g) @ torch.randn(32, d_in, generator=g)
                   + 0.5 * torch.randn(n, d_in, generator=g))
    x1, x2 = (x + 0.3 * torch.randn(n, d_in, generator=g) for _ in range(2))
    proj = nn.Sequential(nn.Linear(d_in, d, bias=False), nn.BatchNorm1d(d), nn.ReLU(),
                         nn.Linear(d, d, bias=False), nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, d))
    with torch.no_grad():
        return F.normalize(proj(x1), dim=1), F.normalize(proj(x2), dim=1)


def test_vicreg_exp_negative_term_is_of_order_one_at_d2048() -> None:
    """Item 1: the old rule's softmax over ``C / tau`` with ``C ~ 1/d`` was uniform and its negative
    term ~1e-4 of the positive one at d = 2048; at the paper's covariance scale it does work."""
    u1, u2 = _realistic_views(256, 2048)
    m = build_method("vicreg_exp", 2048, form="grad")
    g = m.grad_rule(u1, u2, Bank(u1, u2, u1, 0))
    neg = g + u2  # g = -pos + negative term
    ratio = float(neg.norm() / u2.norm())
    assert 0.1 < ratio < 10, f"negative/positive term norm ratio {ratio:.3g}"
    pos_part, neg_part = rules.decorrelation_exp_terms(u1, u2, u1, u2, float(m.hp["grad_lambd"]), float(m.hp["tau"]))
    assert torch.equal(pos_part, -u2) and torch.allclose(neg_part, neg)


def test_simclr_and_moco_grad_keep_unigrad_candidates() -> None:
    """Item 2: ``loss_simclr_grad_mm`` softmaxes over ``N = [Z1m; Z2m]``, the anchor's own target
    included (the old SimCLR-grad masked it; the old MoCo-grad used only the other view)."""
    g = torch.Generator().manual_seed(4)
    u = F.normalize(torch.randn(12, 8, generator=g, dtype=torch.float64), dim=1)
    t1 = F.normalize(u + 0.5 * torch.randn(12, 8, generator=g, dtype=torch.float64), dim=1)
    t2 = F.normalize(u + 0.5 * torch.randn(12, 8, generator=g, dtype=torch.float64), dim=1)
    tau = 0.2
    cands = torch.cat([t1, t2], 0)
    expect = (-t2 + torch.softmax(u @ cands.T / tau, 1) @ cands) / tau
    for name in ("simclr", "moco"):
        m = build_method(name, 8, form="grad").double()
        got = m.grad_rule(u, t2, Bank(u, t2, t1, 0))
        assert torch.allclose(got, expect, rtol=1e-10, atol=1e-12), name


def _linear_predictor_views(wp: torch.Tensor, seed: int):
    """A tiny network; its projections through the linear predictor ``wp`` (so that the loss
    form and the grad form see the same predictor)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, wp.shape[0])).double()
    g = torch.Generator().manual_seed(seed)
    x1, x2 = (torch.randn(20, 6, generator=g, dtype=torch.float64) for _ in range(2))
    t1, t2 = (torch.randn(20, wp.shape[0], generator=g, dtype=torch.float64) for _ in range(2))
    return net, x1, x2, t1, t2


def _param_grad(net: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(net.parameters()))
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("name,ratio", [("simsiam", 1.0), ("byol", 4.0), ("directpred", 4.0)])
def test_loss_form_to_grad_form_gradient_ratio(name: str, ratio: float) -> None:
    """Item 3: with the same linear predictor ``W_p`` and eps = 0 (where UniGrad's rule is the
    exact gradient of ``-cos(W_p u, pos)``) the loss form's parameter gradient is the documented
    constant times the grad form's: SimSiam 1 (``-cos`` averaged over the views), BYOL 4
    (``2 - 2 cos`` summed over the views), DirectPred 4 (luckmatters' ``-2 cos`` summed)."""
    d = 8
    eps_key = "grad_eps" if name == "directpred" else "eps"
    grad_m = build_method(name, d, form="grad", **{eps_key: 0.0}).double()
    loss_m = build_method(name, d, form="loss").double()
    assert loss_m.loss_to_grad == ratio
    g = torch.Generator().manual_seed(0)
    # the grad form's F from some targets; W_p = U sqrt(s / s_max) U^T from it
    warm = F.normalize(torch.randn(40, d, generator=g, dtype=torch.float64), dim=1)
    grad_m.update_state(warm[:20], warm[20:], step=0)
    wp, _ = grad_m._wp_m()
    net, x1, x2, t1, t2 = _linear_predictor_views(wp, 1)
    grad_m.update_state = lambda *a, **k: None  # keep W_p fixed for the comparison
    z1, z2 = net(x1), net(x2)
    g_grad = _param_grad(net, grad_m(Views(z1, z2, t1, t2), step=1)[0])
    z1, z2 = net(x1), net(x2)
    if name == "directpred":
        loss_m.Wp.copy_(wp)
        loss = loss_m(Views(z1, z2, t1, t2), step=1)[0]
    else:
        loss = loss_m(Views(z1, z2, t1, t2, z1 @ wp.T, z2 @ wp.T), step=1)[0]
    g_loss = _param_grad(net, loss)
    assert torch.allclose(g_loss, ratio * g_grad, rtol=1e-8, atol=1e-12), \
        f"ratio {float(g_loss.norm() / g_grad.norm()):.4g}, documented {ratio}"


def test_directpred_predictor_comes_from_earlier_steps() -> None:
    """Item 4: luckmatters sets ``W_p`` after the optimiser step from the statistics so far; the
    loss of step k uses the statistics of steps < k (identity before any), never batch k's."""
    d = 6
    m = build_method("directpred", d, form="loss").double()
    g = torch.Generator().manual_seed(0)
    batches = [[torch.randn(10, d, generator=g, dtype=torch.float64) for _ in range(4)] for _ in range(3)]
    F_hat = None
    wp = torch.eye(d, dtype=torch.float64)
    rho, eps = float(m.hp["rho"]), float(m.hp["eps"])
    for step, (z1, z2, t1, t2) in enumerate(batches):
        loss, _ = m(Views(z1, z2, t1, t2), step)
        expect = -2 * (F.cosine_similarity(z1 @ wp.T, t2, dim=1).mean() + F.cosine_similarity(z2 @ wp.T, t1, dim=1).mean())
        assert torch.allclose(loss, expect, rtol=1e-10), f"step {step}"
        f = torch.cat([z1, z2], 0)
        fb = f.T @ f / f.shape[0]
        F_hat = fb if F_hat is None else rho * F_hat + (1 - rho) * fb
        s, U = torch.linalg.eigh(F_hat)
        wp = U @ torch.diag((torch.sqrt(s.clamp(min=0) / s.max()) + eps).clamp(min=1e-4)) @ U.T
        assert torch.allclose(m.Wp, wp, rtol=1e-8, atol=1e-10)


def test_directpred_predictor_floor_and_scale() -> None:
    """``W_p``'s spectrum is ``clamp(sqrt(s / s_max) + eps, 1e-4)``: at ``eps = 0`` (where the grad
    rule is exact) a rank-deficient ``F`` gets the 1e-4 floor on its null space, not 0; and ``W_p``
    depends on ``F`` only through ``s / s_max``, so it is unchanged by scaling ``F`` down to
    ``s_max = 1e-12`` (the guard against an all-zero ``F``)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 3, generator=g, dtype=torch.float64)
    F_rank3 = a @ a.T  # 8 x 8, rank 3
    wp, M, smax = rules.directpred_predictor(F_rank3, 0.0)
    ev = torch.linalg.eigvalsh(wp)
    assert torch.allclose(ev[:5], torch.full((5,), 1e-4, dtype=torch.float64), rtol=1e-6), ev
    s = torch.linalg.eigvalsh(F_rank3)
    assert torch.allclose(ev[5:], torch.sqrt(s[5:] / s.max()), rtol=1e-8)
    assert torch.allclose(M, F_rank3 / s.max(), rtol=1e-10) and torch.isclose(smax, s.max())
    for eps in (0.0, 0.1):
        ref = rules.directpred_predictor(F_rank3, eps)[0]
        tiny = F_rank3 * (1.5e-12 / float(s.max()))  # s_max = 1.5e-12, just above the guard
        assert torch.allclose(rules.directpred_predictor(tiny, eps)[0], ref, rtol=1e-6, atol=1e-9), eps


def test_moco_v2_loss_is_query_against_queue() -> None:
    """MoCo v2's loss form: view 1's query against view 2's key and the queue only (not the
    batch's other keys); only view 2's keys are enqueued, at the pointer."""
    d, n, K = 8, 4, 12
    m = build_method("moco", d, form="loss", queue_size=K).double()
    g = torch.Generator().manual_seed(0)
    z1, z2, t1, t2 = (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(4))
    queue0 = m.queue.clone()
    assert torch.allclose(queue0.norm(dim=1), torch.ones(K, dtype=torch.float64))
    loss, _ = m(Views(z1, z2, t1, t2), 0)
    q, k = F.normalize(z1, dim=1), F.normalize(t2, dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue0.T], 1) / float(m.hp["tau"])
    assert torch.allclose(loss, F.cross_entropy(logits, torch.zeros(n, dtype=torch.long)))
    assert torch.allclose(m.queue[:n], k) and torch.equal(m.queue[n:], queue0[n:])
    assert int(m.queue_ptr) == n


def test_barlow_twins_standardises_like_batchnorm() -> None:
    """Barlow Twins' ``main.py`` standardises with ``BatchNorm1d(affine=False)``: biased batch
    variance and eps 1e-5 (the old code used the unbiased std)."""
    from transfer.methods.decorrelation import batch_standardise

    z = torch.randn(7, 5, dtype=torch.float64)
    bn = nn.BatchNorm1d(5, affine=False).double().train()
    assert torch.allclose(batch_standardise(z), bn(z), rtol=1e-10)


def test_published_defaults() -> None:
    """The defaults the docstrings cite (seeds.md section 1; the papers' and repos' values)."""
    from transfer.methods import METHODS

    d = {n: METHODS.get(n).defaults for n in METHODS.names()}
    assert d["unigrad"] == {"lambd": 100.0, "rho": 0.99}  # UniGrad
    assert d["simclr"] == {"tau": 0.2} and d["moco"] == {"tau": 0.2, "queue_size": 0}  # UniGrad tau
    assert d["byol"] == d["simsiam"] == {"rho": 0.99, "eps": 0.3}  # UniGrad BYOL/DirectPred-grad
    assert d["directpred"] == {"rho": 0.3, "eps": 0.1, "freq": 1, "grad_rho": 0.99, "grad_eps": 0.3, "predictor": "direct"}
    assert d["barlow_twins"] == {"lambd": 0.0051, "grad_lambd": 50.0}  # barlowtwins main.py; UniGrad
    assert d["vicreg"] == {"sim": 25.0, "std": 25.0, "cov": 1.0, "loss_scale": 1.0, "grad_lambd": 50.0}  # main_vicreg.py
    for n in ("vicreg_exp", "vicreg_ctr"):
        assert d[n] == {"sim": 25.0, "std": 25.0, "cov": 1.0, "loss_scale": 1.0, "tau": 0.1, "grad_lambd": 1.0}
    assert {n: (METHODS.get(n).default_form, METHODS.get(n).default_momentum) for n in ("unigrad", "simclr", "moco", "simsiam")} \
        == {"unigrad": ("grad", True), "simclr": ("loss", False), "moco": ("loss", True), "simsiam": ("loss", False)}


def test_default_forms_and_momentum_of_every_method() -> None:
    from transfer.methods import METHODS

    got = {n: (METHODS.get(n).default_form, METHODS.get(n).default_momentum) for n in METHODS.names()}
    assert got == {
        "unigrad": ("grad", True), "simclr": ("loss", False), "simclr_abs": ("loss", False),
        "simclr_sq": ("loss", False), "moco": ("loss", True), "byol": ("loss", True),
        "simsiam": ("loss", False), "directpred": ("loss", True), "barlow_twins": ("loss", False),
        "vicreg": ("loss", False), "vicreg_exp": ("loss", False), "vicreg_ctr": ("loss", False)}


def test_unknown_parameter_is_a_user_error_with_a_hint() -> None:
    from transfer.errors import UserError

    with pytest.raises(UserError, match="did you mean 'tau'"):
        build_method("simclr", 8, taux=0.1)


def test_pos_sim_is_the_mean_positive_cosine() -> None:
    g = torch.Generator().manual_seed(5)
    z1, z2, t1, t2 = (torch.randn(6, 8, generator=g, dtype=torch.float64) for _ in range(4))
    _, stats = build_method("unigrad", 8).double()(Views(z1, z2, t1, t2), 0)
    expect = 0.5 * (F.cosine_similarity(z1, t2).mean() + F.cosine_similarity(z2, t1).mean())
    assert torch.allclose(stats["pos_sim"], expect)


@pytest.mark.parametrize("name", ["unigrad", "simclr", "barlow_twins", "directpred"])
def test_methods_compute_in_fp32_under_autocast(name: str) -> None:
    """The rules run outside autocast (fp32): bf16 autocast around the call changes nothing."""
    g = torch.Generator().manual_seed(6)
    z1, z2, t1, t2 = (torch.randn(16, 8, generator=g) for _ in range(4))
    exact = build_method(name, 8, form="grad").double()(Views(*(x.double() for x in (z1, z2, t1, t2))), 0)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = build_method(name, 8, form="grad")(Views(z1, z2, t1, t2), 0)[0]
    assert amp.dtype == torch.float32 and torch.allclose(amp.double(), exact, rtol=1e-5, atol=1e-6)


def test_nt_xent_excludes_the_anchor_at_a_rank_offset() -> None:
    """On rank r the anchor's own column sits at ``offset + i`` of this view's block."""
    from transfer.methods import Bank as B

    g = torch.Generator().manual_seed(7)
    a1, a2 = (F.normalize(torch.randn(8, 6, generator=g, dtype=torch.float64), dim=1) for _ in range(2))
    m = build_method("simclr", 6).double()
    whole = m.nt_xent(a1, a2, B(a1, a2, a1, 0))
    halves = 0.5 * (m.nt_xent(a1[:4], a2[:4], B(a1, a2, a1, 0)) + m.nt_xent(a1[4:], a2[4:], B(a1, a2, a1, 4)))
    assert torch.allclose(whole, halves, rtol=1e-12)


def test_vicreg_ctr_rule_on_a_rank_slice_equals_the_global_rows() -> None:
    """Rank r's rows (offset r*n of the gathered bank) get the same rule as in one process."""
    g = torch.Generator().manual_seed(8)
    u, pos = (F.normalize(torch.randn(10, 6, generator=g, dtype=torch.float64), dim=1) for _ in range(2))
    full = rules.sample_exp_grad(u, pos, pos, 0, 1.0, 0.1)
    part = rules.sample_exp_grad(u[5:], pos[5:], pos, 5, 1.0, 0.1)
    assert torch.allclose(part, full[5:], rtol=1e-12)


@pytest.mark.parametrize("name", ["byol", "simsiam"])
def test_loss_form_predictor_is_the_papers_two_layer_mlp(name: str) -> None:
    """BYOL (``byol_experiment.py``) and SimSiam (``builder.py``): Linear - BN - ReLU - Linear on
    the loss form's online branch; the grad form's predictor is the linear ``W_p`` (no module)."""
    pred = build_method(name, 8, form="loss").build_predictor(8, 5)
    kinds = [type(m) for m in pred]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (pred[0].in_features, pred[0].out_features, pred[3].out_features) == (8, 5, 8)
    assert build_method(name, 8, form="grad").build_predictor(8, 5) is None


def test_directpred_trained_predictor_baselines() -> None:
    """DirectPred's baselines (Tian et al., Sec. 6; the study's pred_linear / pred_mlp cells): the
    loss form with ``predictor=linear`` trains a bias-free d x d linear map, with ``predictor=mlp`` a
    2-layer MLP (Linear - BN - ReLU - Linear); the analytic predictor and the grad form build none."""
    lin = build_method("directpred", 8, form="loss", predictor="linear").build_predictor(8, 5)
    assert isinstance(lin, nn.Linear) and lin.weight.shape == (8, 8) and lin.bias is None
    two = build_method("directpred", 8, form="loss", predictor="mlp").build_predictor(8, 5)
    assert [type(m) for m in two] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (two[0].in_features, two[0].out_features, two[3].out_features) == (8, 5, 8)
    assert build_method("directpred", 8, form="loss").build_predictor(8, 5) is None
    for p in ("direct", "linear", "mlp"):
        assert build_method("directpred", 8, form="grad", predictor=p).build_predictor(8, 5) is None


def _every_case():
    from transfer.methods import METHODS

    return [(m, f, mom) for m in METHODS.names() for f in METHODS.get(m).forms for mom in (True, False)]


@pytest.mark.parametrize("case", _every_case(), ids=lambda c: f"{c[0]}-{c[1]}-{'ema' if c[2] else 'noema'}")
def test_rank_one_of_two_equals_one_process(case, monkeypatch) -> None:
    """Rank 1 of a simulated 2-rank world: the other rank holds the same rows reversed, so every
    gathered tensor (a row-wise function of the local rows) is ``cat([flip(x), x])`` and every
    all-reduced statistic (permutation-invariant) is the local one. Then rank 1's loss equals the
    1-process loss on that global batch only if every rank offset (anchor masks, positives) is
    ``rank x local batch``: an offset of 0 on rank 1 masks another sample's copy instead of the
    anchor's own. (The real 2-process check is tests/trainer/test_ddp_every_method.py, slow.)"""
    import transfer.methods.base as mb
    import transfer.methods.contrastive as mc
    import transfer.methods.decorrelation as md

    name, form, momentum = case
    n, d = 6, 8
    g = torch.Generator().manual_seed(11)
    z1, z2, t1, t2, p1, p2 = (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(6))
    if not momentum:
        t1, t2 = z1, z2

    def glob(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.flip(0), x], 0)

    one = build_method(name, d, form=form, momentum=momentum).double()
    expect, _ = one(Views(*(glob(x) for x in (z1, z2, t1, t2, p1, p2))), 0)
    for mod in (mb, mc):
        monkeypatch.setattr(mod, "rank", lambda: 1)
    for mod, fn in ((mb, "gather_nograd"), (mc, "gather_nograd"), (mc, "gather_with_grad"),
                    (md, "gather_nograd"), (md, "gather_with_grad")):
        if hasattr(mod, fn):
            monkeypatch.setattr(mod, fn, glob)
    two = build_method(name, d, form=form, momentum=momentum).double()
    got, _ = two(Views(z1, z2, t1, t2, p1, p2), 0)
    assert torch.allclose(got, expect, rtol=1e-10, atol=1e-12), f"rank 1: {float(got):.12g}, 1 process: {float(expect):.12g}"
