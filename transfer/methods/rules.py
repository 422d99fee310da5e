"""Pure gradient rules and the reference losses they are the gradients of.

Notation as in ``shared/docs/seeds.md``: ``u`` (n, d) are L2-normalised online features of one
view, ``pos`` (n, d) the normalised targets of the other view (momentum or stop-gradient online),
banks are gathered over ranks. Each rule returns ``g`` such that the surrogate
``mean_i <stopgrad(g_i), u_i>`` has the gradient ``g_i / n`` w.r.t. ``u_i`` -- the pattern of
UniGrad ``project/pretrainer.py`` (``loss_unigrad``, ``loss_simclr_grad_mm``,
``loss_byol_directpred_grad``, ``loss_barlow_twins_grad_mm``), written from the paper's
equations (Tao et al., CVPR 2022, Eq. 5-12 and Table 1).

Each ``*_reference`` is a loss ``L(u)`` (targets fixed) with ``n * dL/du_i`` equal to the rule
(exactly, or up to the residual its docstring states); the tests check both.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

Tensor = torch.Tensor


# ---------------------------------------------------------------- contrastive (SimCLR, MoCo, Garrido)
def _kernel(s: Tensor, kernel: str) -> Tuple[Tensor, Tensor]:
    """k(s) and k'(s) for the similarity kernels of InfoNCE ('id'), SimCLR-abs and SimCLR-sq."""
    if kernel == "id":
        return s, torch.ones_like(s)
    if kernel == "abs":
        return s.abs(), torch.sign(s)
    if kernel == "sq":
        return s * s, 2 * s
    raise ValueError(f"unknown contrastive kernel {kernel!r}")


def contrastive_grad(u: Tensor, pos: Tensor, cands: Tensor, tau: float, kernel: str = "id",
                     mask: Optional[Tensor] = None) -> Tensor:
    """InfoNCE gradient: ``g = (-pos + sum_v s_v k'(u.v) v) / tau``, ``s = softmax(k(u.v) / tau)``.

    ``cands`` (m, d) holds every candidate (the positive included); ``mask`` (n, m) bool marks
    candidates excluded per row (e.g. the anchor itself in SimCLR).
    """
    assert u.shape == pos.shape and u.shape[1] == cands.shape[1], f"shapes {u.shape} {pos.shape} {cands.shape}"
    s = u @ cands.T
    k, dk = _kernel(s, kernel)
    logits = k / tau
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    w = torch.softmax(logits, dim=1) * dk
    return (-pos + w @ cands) / tau


def contrastive_reference(u: Tensor, pos: Tensor, cands: Tensor, tau: float, kernel: str = "id",
                          mask: Optional[Tensor] = None) -> Tensor:
    """``mean_i [ -u_i.pos_i / tau + log sum_v exp(k(u_i.v) / tau) ]`` (InfoNCE; exact)."""
    s = u @ cands.T
    k, _ = _kernel(s, kernel)
    logits = k / tau
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    return (-(u * pos).sum(1) / tau + torch.logsumexp(logits, dim=1)).mean()


# ---------------------------------------------------------------- UniGrad
def correlation(t1: Tensor, t2: Tensor) -> Tensor:
    """Batch correlation matrix of the targets of both views: ``(T1^T T1 + T2^T T2) / (2n)``."""
    return (t1.T @ t1 + t2.T @ t2) / (2 * t1.shape[0])


def ema_update(state: Tensor, batch: Tensor, rho: float, initialised: bool) -> Tensor:
    """``F <- F_batch`` on the first step, else ``rho F + (1 - rho) F_batch`` (fp32)."""
    batch = batch.float() if batch.dtype in (torch.float16, torch.bfloat16) else batch  # fp32 at least
    return batch.clone() if not initialised else rho * state + (1 - rho) * batch


def unigrad_grad(u: Tensor, pos: Tensor, F: Tensor, lambd: float) -> Tensor:
    """``g = -pos + lambda F u`` (UniGrad Eq. 12)."""
    return -pos + lambd * u @ F


def unigrad_reference(u: Tensor, pos: Tensor, F: Tensor, lambd: float) -> Tensor:
    """UniGrad's loss form ``mean_i [ -u_i.pos_i + lambda/2 u_i^T F u_i ]`` (exact; F symmetric)."""
    return (-(u * pos).sum(1) + 0.5 * lambd * ((u @ F) * u).sum(1)).mean()


# ---------------------------------------------------------------- decorrelation (Barlow Twins, VICReg)
def decorrelation_grad(u: Tensor, pos: Tensor, u_all: Tensor, pos_all: Tensor, lambd: float) -> Tensor:
    """Barlow-grad: ``g = 2 (-pos + lambda (pos Pos^T) U / N)`` = ``2 (-pos + lambda C pos)``
    with ``C = U^T Pos / N`` the cross-correlation over the global batch."""
    n_all = u_all.shape[0]
    return 2 * (-pos + lambd * (pos @ pos_all.T) @ u_all / n_all)


def barlow_reference(u_all: Tensor, pos_all: Tensor, lambd: float) -> Tensor:
    """Barlow Twins' criterion on the given features, ``C = U^T Pos / N``:
    ``sum_i (1 - C_ii)^2 + lambda sum_{i!=j} C_ij^2``. Its gradient is
    ``(2/N)[-pos + lambda C pos + (1 - lambda) diag(C) pos]``: the rule drops the last term
    (exact at lambda = 1); :func:`barlow_residual` is that term, scaled like ``g``."""
    c = u_all.T @ pos_all / u_all.shape[0]
    on = (1 - torch.diagonal(c)).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + lambd * off


def barlow_residual(u_all: Tensor, pos_all: Tensor, lambd: float) -> Tensor:
    c = u_all.T @ pos_all / u_all.shape[0]
    return 2 * (1 - lambd) * pos_all * torch.diagonal(c)


def embedding_covariance(u_all: Tensor, pos_all: Tensor) -> Tensor:
    """Cross-branch covariance at the scale of the embeddings Garrido et al. exponentiate:
    ``C = d (U - mean U)^T Pos / (N - 1)``, the centred cross-covariance (centring one factor
    centres the product: the centred ``U``'s columns sum to zero).

    VICReg's variance term keeps every embedding dimension near unit variance, so the covariance
    the paper's ``exp(C_ij / tau)`` sees has O(1) diagonal. L2-normalised features have per-dimension
    variance ~1/d; multiplying by ``d`` restores the paper's scale (without it, ``C / tau`` is
    ~1/(d tau) and the softmax is uniform: the negative term vanishes)."""
    d, n = u_all.shape[1], len(u_all)
    return d * ((u_all - u_all.mean(0)).T @ pos_all) / (n - 1)  # one centred factor centres the product


def _offdiag_softmax(c: Tensor, tau: float) -> Tensor:
    """Row-wise ``softmax_{j != i}(c_ij / tau)``."""
    eye = torch.eye(len(c), dtype=torch.bool, device=c.device)
    return torch.softmax((c / tau).masked_fill(eye, float("-inf")), dim=1)


def decorrelation_exp_grad(u: Tensor, pos: Tensor, u_all: Tensor, pos_all: Tensor, lambd: float,
                           tau: float) -> Tensor:
    """VICReg-exp in the unified form (Garrido et al., ICLR 2023, the ``exp`` covariance criterion
    ``(1/d) sum_i log sum_{j != i} exp(C_ij / tau)``, cross-branch as UniGrad does for Barlow/VICReg):

    ``g = -pos + lambda N / ((N - 1) tau) P (pos - mean Pos)``, ``P = softmax_{j != i}(C_ij / tau)``,
    ``C`` from :func:`embedding_covariance`. Exact gradient (times N) of
    :func:`decorrelation_exp_reference`."""
    n_all = u_all.shape[0]
    p = _offdiag_softmax(embedding_covariance(u_all, pos_all), tau)
    centred = pos - pos_all.mean(0)
    return -pos + lambd * n_all / ((n_all - 1) * tau) * centred @ p.T


def decorrelation_exp_reference(u_all: Tensor, pos_all: Tensor, lambd: float, tau: float) -> Tensor:
    """``-mean_i u_i.pos_i + lambda (1/d) sum_i log sum_{j!=i} exp(C_ij / tau)`` with ``C`` from
    :func:`embedding_covariance` (exact)."""
    c = embedding_covariance(u_all, pos_all)
    eye = torch.eye(len(c), dtype=torch.bool, device=u_all.device)
    t = torch.logsumexp((c / tau).masked_fill(eye, float("-inf")), dim=1).mean()
    return -(u_all * pos_all).sum(1).mean() + lambd * t


def decorrelation_exp_terms(u: Tensor, pos: Tensor, u_all: Tensor, pos_all: Tensor, lambd: float,
                            tau: float) -> Tuple[Tensor, Tensor]:
    """The positive (``-pos``) and negative parts of :func:`decorrelation_exp_grad` (diagnostics)."""
    g = decorrelation_exp_grad(u, pos, u_all, pos_all, lambd, tau)
    return -pos, g + pos


# ---------------------------------------------------------------- asymmetric (BYOL, SimSiam, DirectPred)
def directpred_predictor(F: Tensor, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """DirectPred's linear predictor from the correlation ``F = U diag(s) U^T``:
    ``W_p = U diag(clamp(sqrt(s / s_max) + eps, 1e-4)) U^T`` (Tian et al. 2021, Eq. 18, the
    normalised variant of luckmatters ``ssl/real-dataset``), and UniGrad's
    ``M = F / s_max + eps^2 I`` (``loss_byol_directpred_grad``). Returns (W_p, M, s_max)."""
    s, U = torch.linalg.eigh(F.double())
    s = s.clamp(min=0)
    smax = s.max().clamp(min=1e-12)
    p = (torch.sqrt(s / smax) + eps).clamp(min=1e-4)
    wp = (U * p) @ U.T
    M = F.double() / smax + eps ** 2 * torch.eye(len(F), dtype=torch.float64, device=F.device)
    return wp.to(F.dtype), M.to(F.dtype), smax.to(F.dtype)


def directpred_grad(u: Tensor, pos: Tensor, wp: Tensor, M: Tensor) -> Tensor:
    """BYOL/DirectPred-grad: ``g = (-W_p pos + lam M u) / ||W_p u||``,
    ``lam = <W_p u, pos> / (u^T M u)`` (UniGrad Eq. 9-10)."""
    wu = u @ wp.T
    nrm = wu.norm(dim=1, keepdim=True).clamp(min=1e-12)
    mu = u @ M.T
    lam = (wu * pos).sum(1, keepdim=True) / (mu * u).sum(1, keepdim=True).clamp(min=1e-12)
    return (-pos @ wp + lam * mu) / nrm


def asymmetric_reference(u: Tensor, pos: Tensor, wp: Tensor) -> Tensor:
    """BYOL's loss with a linear predictor: ``mean_i -cos(W_p u_i, pos_i)``. Its gradient equals
    :func:`directpred_grad` exactly when ``M = W_p^T W_p``; UniGrad's ``M = F/s_max + eps^2 I``
    drops the cross term ``2 eps U diag(sqrt(s/s_max)) U^T`` of ``W_p^T W_p`` (exact at eps = 0)."""
    wu = u @ wp.T
    return -(torch.nn.functional.cosine_similarity(wu, pos, dim=1)).mean()


# ---------------------------------------------------------------- Garrido et al.'s duality
def sample_contrastive(K: Tensor) -> Tensor:
    """``L_c = ||K^T K - diag(K^T K)||_F^2`` for K (M dims x N samples)."""
    g = K.T @ K
    return g.pow(2).sum() - torch.diagonal(g).pow(2).sum()


def dimension_contrastive(K: Tensor) -> Tensor:
    """``L_nc = ||K K^T - diag(K K^T)||_F^2``."""
    c = K @ K.T
    return c.pow(2).sum() - torch.diagonal(c).pow(2).sum()


def _exclude_positive(logits: Tensor, offset: int) -> Tensor:
    idx = torch.arange(logits.shape[0], device=logits.device)
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[idx, offset + idx] = True
    return logits.masked_fill(mask, float("-inf"))


def sample_exp_grad(u: Tensor, pos: Tensor, pos_all: Tensor, offset: int, lambd: float, tau: float) -> Tensor:
    """VICReg-ctr in the unified form: ``g = -pos_i + (lambda/tau) sum_{m != i} w_im pos_m``,
    ``w_i = softmax_{m != i}(u_i.pos_m / tau)`` (Garrido et al. Eq. 7 on ``K^T``, cross-branch)."""
    logits = _exclude_positive((u @ pos_all.T) / tau, offset)
    return -pos + lambd / tau * torch.softmax(logits, 1) @ pos_all


def sample_exp_reference(u: Tensor, pos: Tensor, pos_all: Tensor, offset: int, lambd: float, tau: float) -> Tensor:
    """``mean_i [ -u_i.pos_i + lambda log sum_{m != i} exp(u_i.pos_m / tau) ]`` (exact)."""
    logits = _exclude_positive((u @ pos_all.T) / tau, offset)
    return (-(u * pos).sum(1) + lambd * torch.logsumexp(logits, 1)).mean()
