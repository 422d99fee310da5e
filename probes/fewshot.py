"""Few-shot probes on cached features: N-way K-shot episodes and a low-shot curve.

Episodes (the meta-learning protocol; classifiers after SimpleShot, Wang et al. 2019, and RFS,
WangYueFt/rfs ``eval/meta_eval.py``): pick N classes, K support and Q query images per class
(disjoint), classify the queries with
- ``proto``: nearest class mean of L2-normalised features, by cosine similarity;
- ``logreg``: multinomial logistic regression on L2-normalised features at scikit-learn C = 1
  (RFS's setting), all episodes of a chunk fitted in one batched L-BFGS problem.
Reported as mean +- 1.96 * std / sqrt(episodes) (population std, ddof = 0), see :func:`ci95`.

Low-shot curve (VISSL-style, simplified): for each s in 1, 2, 4, 8, 16, ... images per class and
several seeds, sample s train images per class, fit both classifiers, score on the full test split.
Unlike VISSL there is no per-shot cost sweep (no validation data at 1 shot): C = 1 throughout.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from transfer.errors import UserError

from .checks import ArrayLike, as_tensor, check_features, infer_num_classes, check_labels

PROTOCOL = ("N-way K-shot episodes on L2-normalised features: prototype (cosine to class means) and "
            "logistic regression (C=1); mean +- 1.96 std/sqrt(episodes)")


def ci95(values: Sequence[float]) -> Tuple[float, float]:
    """(mean, half-width) with half-width = 1.96 * std / sqrt(n), std with ddof = 0."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(1.96 * a.std() / math.sqrt(a.size))


def sample_episode(by_class: Dict[int, np.ndarray], n_way: int, k_shot: int, n_query: int,
                   rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One episode: ``(support_idx, support_y, query_idx, query_y)``, labels re-indexed 0..N-1.

    Support and query images of a class come from one draw without replacement, so no image is
    in both. Only classes with at least ``k_shot + n_query`` images are eligible.
    """
    eligible = sorted(c for c, idx in by_class.items() if len(idx) >= k_shot + n_query)
    if len(eligible) < n_way:
        raise UserError(f"few-shot: {n_way}-way {k_shot}-shot with {n_query} queries needs {n_way} classes "
                        f"with >= {k_shot + n_query} images; only {len(eligible)} have that many")
    classes = rng.choice(eligible, size=n_way, replace=False)
    s_idx, s_y, q_idx, q_y = [], [], [], []
    for j, c in enumerate(classes):
        pick = rng.choice(by_class[int(c)], size=k_shot + n_query, replace=False)
        s_idx.append(pick[:k_shot])
        q_idx.append(pick[k_shot:])
        s_y += [j] * k_shot
        q_y += [j] * n_query
    return np.concatenate(s_idx), np.asarray(s_y), np.concatenate(q_idx), np.asarray(q_y)


def group_by_class(labels: torch.Tensor) -> Dict[int, np.ndarray]:
    y = labels.cpu().numpy()
    return {int(c): np.flatnonzero(y == c) for c in np.unique(y)}


def proto_predict(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, n_way: int) -> torch.Tensor:
    """Batched prototype classifier. xs (E, S, D), ys (E, S), xq (E, Q, D) -> predictions (E, Q)."""
    onehot = F.one_hot(ys, n_way).to(xs.dtype)  # (E, S, N)
    protos = onehot.transpose(1, 2) @ xs / onehot.sum(1).unsqueeze(2).clamp(min=1)
    protos = F.normalize(protos, dim=2)
    return (xq @ protos.transpose(1, 2)).argmax(2)


def logreg_predict(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, n_way: int,
                   C: float = 1.0, max_iter: int = 100) -> torch.Tensor:
    """Batched multinomial logistic regression, one model per episode, scikit-learn's objective
    ``C * sum CE + ||W||^2 / 2`` (bias unpenalised), all episodes in one L-BFGS problem: the
    objective is a sum of independent convex terms, so the joint minimiser is each episode's."""
    E, S, D = xs.shape
    W = torch.zeros(E, D, n_way, dtype=xs.dtype, requires_grad=True)
    b = torch.zeros(E, 1, n_way, dtype=xs.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, history_size=10,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        logits = xs @ W + b
        loss = C * F.cross_entropy(logits.reshape(E * S, n_way), ys.reshape(-1), reduction="sum") + 0.5 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return (xq @ W + b).argmax(2)


def fewshot_eval(feats: ArrayLike, labels: ArrayLike, n_way: int = 5, shots: Sequence[int] = (1, 5),
                 n_query: int = 15, episodes: int = 600, seed: int = 0,
                 classifiers: Sequence[str] = ("proto", "logreg"), chunk: int = 100, C: float = 1.0) -> Dict:
    """Episodic accuracy (%) for each shot count and classifier, with 95% CIs.

    Returns ``{"results": {shot: {clf: {"mean", "ci95", "episodes"}}}, "n_way", "n_query",
    "episodes", "seed", "protocol", "warnings"}``. Episodes for a given (seed, shot) are the same
    for both classifiers.
    """
    x = as_tensor(feats, torch.float32)
    y = as_tensor(labels, torch.int64).cpu()
    warnings = check_features(x, "few-shot features")
    x = F.normalize(x, dim=1)
    by_class = group_by_class(y)
    out: Dict = {"protocol": PROTOCOL, "n_way": n_way, "n_query": n_query, "episodes": episodes,
                 "seed": seed, "C": C, "shots": list(shots), "results": {}, "warnings": warnings,
                 "n_images": int(x.shape[0]), "num_classes": len(by_class)}
    for k in shots:
        rng = np.random.default_rng([seed, int(k)])
        eps = [sample_episode(by_class, n_way, int(k), n_query, rng) for _ in range(episodes)]
        accs: Dict[str, List[float]] = {c: [] for c in classifiers}
        for lo in range(0, episodes, chunk):
            part = eps[lo:lo + chunk]
            xs = x[torch.as_tensor(np.stack([e[0] for e in part]))]
            ys = torch.as_tensor(np.stack([e[1] for e in part]))
            xq = x[torch.as_tensor(np.stack([e[2] for e in part]))]
            yq = torch.as_tensor(np.stack([e[3] for e in part]))
            for c in classifiers:
                pred = proto_predict(xs, ys, xq, n_way) if c == "proto" else logreg_predict(xs, ys, xq, n_way, C)
                accs[c] += ((pred == yq).double().mean(1) * 100).tolist()
        out["results"][int(k)] = {c: dict(zip(("mean", "ci95"), ci95(a)), episodes=len(a)) for c, a in accs.items()}
    return out


def default_lowshot_shots(min_per_class: int) -> List[int]:
    """1, 2, 4, ... up to the smallest class size (at most 96, VISSL's largest)."""
    s, out = 1, []
    while s <= min(min_per_class, 96):
        out.append(s)
        s *= 2
    return out


def lowshot_curve(train_feats: ArrayLike, train_labels: ArrayLike, test_feats: ArrayLike,
                  test_labels: ArrayLike, shots: Optional[Sequence[int]] = None,
                  seeds: Sequence[int] = (0, 1, 2), C: float = 1.0,
                  classifiers: Sequence[str] = ("proto", "logreg")) -> Dict:
    """Test accuracy (%) vs labelled train images per class, mean +- 95% CI over seeds."""
    xtr = F.normalize(as_tensor(train_feats, torch.float32), dim=1)
    xte = F.normalize(as_tensor(test_feats, torch.float32), dim=1)
    ytr = as_tensor(train_labels, torch.int64).cpu()
    yte = as_tensor(test_labels, torch.int64).cpu()
    warnings = check_features(xtr, "low-shot train features") + check_features(xte, "low-shot test features")
    by_class = group_by_class(ytr)
    classes = sorted(by_class)
    nc = infer_num_classes(ytr, yte)
    warnings += check_labels(ytr, yte, nc)  # negative or out-of-range labels: an error, not a remap
    min_n = min(len(v) for v in by_class.values())
    shots = list(shots) if shots is not None else default_lowshot_shots(min_n)
    too_big = [s for s in shots if s > min_n]
    if too_big:
        warnings.append(f"low-shot: shots {too_big} exceed the smallest train class ({min_n} images): skipped")
        shots = [s for s in shots if s <= min_n]
    remap = torch.full((nc,), -1, dtype=torch.long)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    yte_r = remap[yte]  # test classes absent from train map to -1: always wrong
    res: Dict = {}
    for s in shots:
        accs: Dict[str, List[float]] = {c: [] for c in classifiers}
        for sd in seeds:
            rng = np.random.default_rng([int(sd), int(s), 7])
            idx = np.concatenate([rng.choice(by_class[c], size=s, replace=False) for c in classes])
            xs, ys = xtr[idx][None], remap[ytr[idx]][None]
            for c in classifiers:
                if c == "proto":
                    pred = proto_predict(xs, ys, xte[None], len(classes))[0]
                else:
                    pred = logreg_predict(xs, ys, xte[None], len(classes), C)[0]
                accs[c].append(float((pred == yte_r).double().mean() * 100))
        res[int(s)] = {c: dict(zip(("mean", "ci95"), ci95(a)), runs=len(a)) for c, a in accs.items()}
    return {"protocol": "low-shot: s labelled train images per class, prototype and logistic regression (C=1), "
                        "full test split, mean +- 1.96 std/sqrt(seeds)",
            "shots": shots, "seeds": list(seeds), "C": C, "results": res, "warnings": warnings}
