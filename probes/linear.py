"""Fast linear probe on cached features: multinomial logistic regression, full-batch L-BFGS in torch.

Protocol (seeds.md section 4; the "cheap" protocol of Kornblith et al. 2019, also used by SimCLR's
transfer tables): standardise features with train statistics, sweep the L2 strength over a log
grid (default 45 values, 1e-6 .. 1e5), pick the value with the best accuracy on a stratified
held-out validation split of train, warm-starting each fit from the previous (strongest-first)
solution, then refit on train + val at the chosen value and report test accuracy.

Objective, per fit (bias not penalised, as scikit-learn's lbfgs solver)::

    mean_i CE(W x_i + b, y_i) + (l2 / 2) * ||W||^2

which has the same minimiser as scikit-learn's ``LogisticRegression(C=C)`` objective
``C * sum_i CE_i + ||W||^2 / 2`` when ``l2 = 1 / (C * n)`` (n = training rows), i.e.
``C = 1 / (l2 * n)``. :func:`l2_to_C` and :func:`C_to_l2` state that mapping in code.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .checks import ArrayLike, as_tensor, check_pair, infer_num_classes
from .knn import per_class_accuracy

PROTOCOL = ("fast linear probe: standardised cached features, multinomial logistic regression "
            "(full-batch L-BFGS), L2 sweep chosen on a held-out validation split, refit on train+val")


def l2_to_C(l2: float, n: int) -> float:
    """scikit-learn's ``C`` equivalent to our mean-loss L2 strength on ``n`` training rows."""
    return 1.0 / (l2 * n)


def C_to_l2(C: float, n: int) -> float:
    """Our mean-loss L2 strength equivalent to scikit-learn's ``C`` on ``n`` training rows."""
    return 1.0 / (C * n)


def default_sweep(n: int = 45, lo: float = 1e-6, hi: float = 1e5) -> List[float]:
    """``n`` log-spaced L2 values from ``hi`` down to ``lo`` (strongest first, for warm starts)."""
    if n == 1:
        return [lo]
    return [float(v) for v in np.logspace(math.log10(hi), math.log10(lo), n)]


def fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float,
               init: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, max_iter: int = 500,
               tol: float = 1e-5) -> Tuple[torch.Tensor, torch.Tensor]:
    """Minimise the objective in the module docstring with full-batch L-BFGS (strong Wolfe).

    ``x`` (N, D) float, ``y`` (N,) int64. ``init`` = (W (C, D), b (C,)) warm start. Stops when
    the largest gradient entry is below ``tol`` (scikit-learn's lbfgs default is 1e-4 on the same
    mean-loss scale) or after ``max_iter`` iterations. Returns (W, b).

    Without ``init`` the fit starts from ``W = 0`` and ``b`` = the log class priors, the exact
    minimiser as ``l2 -> inf``. Starting from ``b = 0`` instead, at strong L2 the penalty's curvature
    (``l2``) dwarfs the bias's (~0.1) and L-BFGS stops with the bias unconverged: predictions then
    follow ``W x`` (~ class means / l2) where the true optimum predicts the majority class, and
    the strong end of the validation curve is set by solver noise, not by the features.
    """
    d = x.shape[1]
    W = (init[0].clone() if init is not None else torch.zeros(num_classes, d, dtype=x.dtype, device=x.device))
    if init is not None:
        b = init[1].clone()
    else:
        counts = torch.bincount(y, minlength=num_classes).to(x.dtype)
        b = torch.log(counts.clamp(min=0.5) / counts.sum())  # absent classes: a finite, very low prior
        b = b - b.mean()
    W.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, history_size=20, tolerance_grad=tol,
                            tolerance_change=tol * 1e-2, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(x @ W.T + b, y) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return W.detach(), b.detach()


def predict_scores(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return x @ W.T + b


def stratified_split(y: torch.Tensor, val_frac: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val): ``val_frac`` of each class (at least 1 when the class has >= 2 images)."""
    g = torch.Generator().manual_seed(seed)
    tr: List[torch.Tensor] = []
    va: List[torch.Tensor] = []
    for c in y.unique().tolist():
        idx = (y == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        nv = int(round(val_frac * idx.numel()))
        nv = min(max(nv, 1 if idx.numel() >= 2 else 0), idx.numel() - 1)
        va.append(idx[:nv])
        tr.append(idx[nv:])
    return torch.cat(tr).sort().values, torch.cat(va).sort().values


def _acc(scores: torch.Tensor, y: torch.Tensor) -> float:
    return float((scores.argmax(1) == y).double().mean() * 100) if y.numel() else float("nan")


#: the sanity check's margin: a linear probe this many points below a simpler classifier on the
#: same features (nearest class mean, or the k-NN probe) is reported as a warning
SANITY_POINTS = 3.0


def nearest_class_mean_top1(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor,
                            num_classes: int) -> float:
    """Top-1 (%) of the nearest-class-mean classifier (Euclidean, on the probe's standardised
    features): the floor a tuned linear classifier should not fall below by much."""
    means = torch.zeros(num_classes, xtr.shape[1], dtype=xtr.dtype, device=xtr.device)
    means.index_add_(0, ytr, xtr)
    counts = torch.bincount(ytr, minlength=num_classes).clamp(min=1).to(xtr.dtype)
    means = means / counts[:, None]
    present = torch.bincount(ytr, minlength=num_classes) > 0
    d = torch.cdist(xte, means)
    d[:, ~present] = float("inf")
    return float((d.argmin(1) == yte).double().mean() * 100)


def rise_tolerance(acc: float, n_val: int) -> float:
    """One binomial standard error, in points, of a validation accuracy ``acc`` (%) on ``n_val``
    images: how far a sweep's curve must rise above its strong-end value before the rise is read as
    real rather than a few images flipping on a plateau."""
    p = min(max(acc / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / max(int(n_val), 1))


def sweep_should_stop(val_accs: Sequence[float], patience: Optional[int], min_rise: float = 0.0) -> bool:
    """Early stop of a strongest-first L2 sweep, only past a real peak.

    True when the accuracy has risen more than ``min_rise`` points above its first (strongest-L2)
    value, and the last ``patience`` values all lie strictly below the best so far. A flat curve --
    including one that jitters by a few images on the strong-end plateau (a vicreg_exp export's
    42.100 -> 42.108 -> 42.092 %, 1 image in 12,000, stopped the former rule at L2 1e4 with 43 % test
    top-1 where its k-NN gave 72 %) -- or one that only falls, runs to the end of the grid.
    ``patience=None`` never stops.
    """
    if patience is None or len(val_accs) <= patience:
        return False
    best = max(val_accs)
    if not best > val_accs[0] + min_rise:
        return False  # never rose: still on the strong-end plateau (or a monotone curve)
    i_best = max(i for i, a in enumerate(val_accs) if a == best)
    tail = val_accs[-patience:]
    return len(val_accs) - 1 - i_best >= patience and all(a < best for a in tail)


def stops_here(accs: Sequence[float], n_grid: int, patience: Optional[int], n_val: int) -> bool:
    """The sweep's stop decision after ``len(accs)`` of ``n_grid`` values: the one rule both
    :func:`linear_probe` and :func:`sweep_is_current` apply."""
    return len(accs) < n_grid and sweep_should_stop(accs, patience, rise_tolerance(accs[0], n_val))


def sweep_is_current(rec: Dict) -> bool:
    """Whether today's stop rule would end a recorded sweep (a ``linear_probe`` result) where it
    ended: the record stands; else its L2 choice may differ and the probe must be rerun. Every fit
    before the stop is deterministic given the features, so the recorded curve is what a rerun
    would see up to that point."""
    accs = [float(p["val_top1"]) for p in rec.get("sweep") or []]
    if not accs:
        return True  # no sweep: a single L2 value
    n = len(rec["l2_values"])
    stop = next((k for k in range(1, len(accs) + 1) if stops_here(accs[:k], n, rec.get("patience"), rec["n_val"])), None)
    return stop == (len(accs) if len(accs) < n else None)


def choose_l2(val_accs: Sequence[float]) -> int:
    """Index of the chosen L2 on a strongest-first validation curve: the best accuracy; among tied
    best values, the middle of the first tied run (the centre of a plateau top, a local maximum),
    never the first point of a flat stretch that the curve later rises above."""
    best = max(val_accs)
    i = val_accs.index(best)
    j = i
    while j + 1 < len(val_accs) and val_accs[j + 1] == best:
        j += 1
    return (i + j) // 2


def linear_probe(train_feats: ArrayLike, train_labels: ArrayLike, test_feats: ArrayLike,
                 test_labels: ArrayLike, l2_values: Optional[Sequence[float]] = None,
                 val_frac: float = 0.2, seed: int = 0, standardize: bool = True,
                 num_classes: Optional[int] = None, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, max_iter: int = 500, patience: Optional[int] = 4) -> Dict:
    """Fast linear probe; returns a dict of numbers and hyperparameters (accuracies in %).

    Keys: ``top1``, ``top5``, ``per_class``, ``best_l2``, ``best_C`` (scikit-learn equivalent on
    train+val), ``sweep`` (list of {l2, val_top1}), ``val_top1``, ``n_train``, ``n_val``,
    ``n_test``, ``predictions`` (numpy, not for JSON), ``warnings``, ``protocol``.

    ``patience``: the sweep runs from the strongest L2 to the weakest (warm starts) and may stop
    early only once it is past a real peak (:func:`sweep_should_stop`): validation accuracy must
    have risen above its value at the strongest L2 by more than one binomial standard error
    (:func:`rise_tolerance`) and then stayed strictly below that best for
    ``patience`` consecutive values. A flat stretch -- the strong end, where the weights are ~ class
    means / L2 and the argmax (hence the accuracy) does not move -- never stops it. ``None`` runs the
    whole grid. The chosen L2 is :func:`choose_l2`'s: the best validation accuracy, a local maximum
    of the curve. ``sweep_end`` in the result says why the sweep ended.
    """
    xtr = as_tensor(train_feats, torch.float32)
    xte = as_tensor(test_feats, torch.float32)
    ytr = as_tensor(train_labels, torch.int64).cpu()
    yte = as_tensor(test_labels, torch.int64).cpu()
    C = int(num_classes or infer_num_classes(ytr, yte))
    warnings = check_pair(xtr, xte, ytr, yte, C)
    l2_values = list(l2_values) if l2_values is not None else default_sweep()
    l2_values = sorted(l2_values, reverse=True)  # strongest first: warm starts move from W ~ 0
    if standardize:
        mu, sd = xtr.mean(0), xtr.std(0)
        sd = torch.where(sd > 1e-8, sd, torch.ones_like(sd))
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    dev = torch.device(device)
    xtr, xte, ytr_d = xtr.to(dev, dtype), xte.to(dev, dtype), ytr.to(dev)
    tr_idx, va_idx = stratified_split(ytr, val_frac, seed)
    sweep: List[Dict[str, float]] = []
    if len(l2_values) > 1 and va_idx.numel() > 0:
        xa, ya = xtr[tr_idx.to(dev)], ytr_d[tr_idx.to(dev)]
        xv, yv = xtr[va_idx.to(dev)], ytr_d[va_idx.to(dev)]
        init = None
        fits: List[Tuple[torch.Tensor, torch.Tensor]] = []
        sweep_end = f"ran the whole grid ({len(l2_values)} values)"
        for l2 in l2_values:
            init = fit_logreg(xa, ya, C, l2, init=init, max_iter=max_iter)
            fits.append(init)
            acc = _acc(predict_scores(xv, *init), yv)
            sweep.append({"l2": l2, "C": l2_to_C(l2, int(tr_idx.numel())), "val_top1": acc})
            if stops_here([p["val_top1"] for p in sweep], len(l2_values), patience, int(va_idx.numel())):
                sweep_end = (f"stopped past the peak: validation top-1 rose to {max(p['val_top1'] for p in sweep):.2f} % "
                             f"then stayed below it for {patience} values ({len(sweep)} of {len(l2_values)} values run)")
                break
        i_best = choose_l2([p["val_top1"] for p in sweep])
        best_l2, val_top1, init = sweep[i_best]["l2"], sweep[i_best]["val_top1"], fits[i_best]
    else:
        if len(l2_values) > 1:
            warnings.append("train split too small for a validation split: used the weakest L2 of the sweep")
        best_l2, val_top1, init = l2_values[-1], float("nan"), None
        sweep_end = "no sweep: a single L2 value or no validation split"
    W, b = fit_logreg(xtr, ytr_d, C, best_l2, init=init, max_iter=max_iter)
    scores = predict_scores(xte, W, b).cpu().double()
    top = torch.sort(-scores, dim=1, stable=True).indices[:, :min(5, C)]
    pred = top[:, 0]
    top1 = float((pred == yte).double().mean() * 100)
    ncm = nearest_class_mean_top1(xtr, ytr_d, xte, yte.to(dev), C)
    if top1 < ncm - SANITY_POINTS:
        warnings.append(f"linear top-1 {top1:.2f} % is {ncm - top1:.2f} points below the nearest-class-mean "
                        f"classifier ({ncm:.2f} %) on the same features: the L2 sweep or the fit is suspect")
    return {
        "protocol": PROTOCOL, "standardize": standardize, "val_frac": val_frac, "seed": seed,
        "l2_values": l2_values, "sweep": sweep, "best_l2": best_l2, "patience": patience,
        "sweep_stopped_early": len(sweep) < len(l2_values) and len(l2_values) > 1,
        "best_C": l2_to_C(best_l2, int(xtr.shape[0])), "val_top1": val_top1,
        "top1": top1, "ncm_top1": ncm, "sweep_end": sweep_end,
        "top5": float((top == yte[:, None]).any(1).double().mean() * 100),
        "per_class": per_class_accuracy(pred, yte, C), "num_classes": C,
        "n_train": int(tr_idx.numel()), "n_val": int(va_idx.numel()), "n_test": int(yte.numel()),
        "feature_dim": int(xtr.shape[1]), "predictions": pred.numpy(), "warnings": warnings,
    }
