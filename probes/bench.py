"""Probe benchmark: time and peak memory of our k-NN and linear probe against scikit-learn and
DINO's torch matmul+topk, on synthetic features (default 50,000 x 512 train, 10,000 x 512 test).

For ``transfer bench probes`` (the command lives in ``transfer.commands.bench``): call
:func:`bench_probes` and print :func:`format_bench`. Peak memory is the largest resident-set
increase over the baseline while a call runs (sampled every 5 ms from ``/proc/self/statm``, so a
lower bound on short spikes; 0 where ``/proc`` is missing).

The scikit-learn k-NN uses ``metric="cosine"``, brute force and weights ``exp(-d / T)`` with
``d = 1 - sim``: proportional to DINO's ``exp(sim / T)`` per query, so the same vote.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .knn import weighted_knn
from .linear import default_sweep, fit_logreg, l2_to_C, linear_probe

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


def measure(fn: Callable[[], Any]) -> Tuple[Any, float, int]:
    """Run ``fn``; return (result, seconds, peak RSS increase in bytes)."""
    base, peak, stop = _rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss() - base)
            time.sleep(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    try:
        out = fn()
    finally:
        dt = time.perf_counter() - t
        stop.set()
        th.join()
    return out, dt, max(peak[0], _rss() - base)


def synthetic_features(n_train: int, n_test: int, dim: int, classes: int = 10, seed: int = 0):
    """Gaussian class clusters, overlapping enough that accuracies are far from 100 %."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * (2.0 / dim ** 0.5)
    ytr = torch.randint(0, classes, (n_train,), generator=g)
    yte = torch.randint(0, classes, (n_test,), generator=g)
    xtr = torch.relu(centers[ytr] + torch.randn(n_train, dim, generator=g))
    xte = torch.relu(centers[yte] + torch.randn(n_test, dim, generator=g))
    return xtr, ytr, xte, yte


def dino_torch_knn(xtr, ytr, xte, yte, k: int, T: float, classes: int, chunk: int = 1000) -> np.ndarray:
    """DINO's code shape (``eval_knn.py``): chunked matmul + topk + one-hot weighted sum."""
    xtr, xte = F.normalize(xtr, dim=1), F.normalize(xte, dim=1)
    bank = xtr.t()
    preds = []
    for lo in range(0, xte.shape[0], chunk):
        sim = xte[lo:lo + chunk] @ bank
        d, i = sim.topk(k, dim=1)
        onehot = torch.zeros(i.shape[0] * k, classes).scatter_(1, ytr[i].view(-1, 1), 1)
        probs = (onehot.view(i.shape[0], k, classes) * (d / T).exp().unsqueeze(2)).sum(1)
        preds.append(probs.argmax(1))
    return torch.cat(preds).numpy()


def bench_probes(n_train: int = 50_000, n_test: int = 10_000, dim: int = 512, k: int = 20, T: float = 0.07,
                 l2_steps: int = 10, classes: int = 10, seed: int = 0, with_sklearn: bool = True) -> Dict[str, Any]:
    """Time / peak memory / accuracy of each implementation; ``rows`` is a list of dicts."""
    xtr, ytr, xte, yte = synthetic_features(n_train, n_test, dim, classes, seed)
    rows: List[Dict[str, Any]] = []
    # one-time warm-up (torch autograd / L-BFGS first-call set-up, FAISS import), not timed
    fit_logreg(xtr[:64], ytr[:64], classes, 1e-3, max_iter=5)
    weighted_knn(xtr[:64], ytr[:64], xte[:8], yte[:8], ks=(5,), num_classes=classes)
    res, dt, mem = measure(lambda: weighted_knn(xtr, ytr, xte, yte, ks=(k,), T=T, num_classes=classes))
    ours_pred = res["predictions"][k]
    rows.append({"task": "k-NN", "impl": f"probes.knn ({res['backend']})", "seconds": dt, "peak_mb": mem / 2**20,
                 "top1": res["top1"][k]})
    pred, dt, mem = measure(lambda: dino_torch_knn(xtr, ytr, xte, yte, k, T, classes))
    rows.append({"task": "k-NN", "impl": "torch matmul+topk (DINO shape)", "seconds": dt, "peak_mb": mem / 2**20,
                 "top1": float((pred == yte.numpy()).mean() * 100), "agree_with_ours": float((pred == ours_pred).mean())})
    sweep = default_sweep(l2_steps, 1e-6, 1e1)
    lin, dt, mem = measure(lambda: linear_probe(xtr, ytr, xte, yte, l2_values=sweep, seed=seed, num_classes=classes))
    rows.append({"task": "linear", "impl": f"probes.linear (torch L-BFGS, warm-started, patience {lin['patience']}: "
                                           f"{len(lin['sweep'])}/{len(sweep)} sweep values fitted)", "seconds": dt,
                 "peak_mb": mem / 2**20, "top1": lin["top1"], "best_C": lin["best_C"]})
    if with_sklearn:
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import KNeighborsClassifier

        knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                                   weights=lambda d: np.exp(-d / T))
        pred, dt, mem = measure(lambda: knn.fit(xtr.numpy(), ytr.numpy()).predict(xte.numpy()))
        rows.append({"task": "k-NN", "impl": "sklearn KNeighborsClassifier (brute, cosine)", "seconds": dt,
                     "peak_mb": mem / 2**20, "top1": float((pred == yte.numpy()).mean() * 100),
                     "agree_with_ours": float((pred == ours_pred).mean())})
        # the same sweep on the same split and standardisation, then the same refit
        from .linear import stratified_split

        mu, sd = xtr.mean(0), xtr.std(0).clamp(min=1e-8)
        ztr, zte = ((xtr - mu) / sd).numpy(), ((xte - mu) / sd).numpy()
        tr, va = stratified_split(ytr, 0.2, seed)

        def sk_sweep() -> float:
            best = (-1.0, sweep[0])
            for l2 in sweep:
                m = LogisticRegression(C=l2_to_C(l2, len(tr)), max_iter=1000).fit(ztr[tr], ytr.numpy()[tr])
                acc = (m.predict(ztr[va]) == ytr.numpy()[va]).mean() * 100
                best = max(best, (acc, l2), key=lambda b: b[0])
            m = LogisticRegression(C=l2_to_C(best[1], len(ytr)), max_iter=1000).fit(ztr, ytr.numpy())
            return float((m.predict(zte) == yte.numpy()).mean() * 100)

        acc, dt, mem = measure(sk_sweep)
        rows.append({"task": "linear", "impl": "sklearn LogisticRegression (lbfgs), same sweep", "seconds": dt,
                     "peak_mb": mem / 2**20, "top1": acc})
    return {"n_train": n_train, "n_test": n_test, "dim": dim, "k": k, "T": T, "l2_steps": l2_steps,
            "threads": torch.get_num_threads(), "rows": rows}


def format_bench(b: Dict[str, Any]) -> str:
    """A plain-text table of :func:`bench_probes` output, with speed-ups against scikit-learn."""
    lines = [f"probe benchmark: {b['n_train']} x {b['dim']} train, {b['n_test']} test, k={b['k']}, "
             f"{b['l2_steps']} L2 values, {b['threads']} torch threads",
             f"{'task':7} {'implementation':48} {'s':>8} {'peak MB':>8} {'top-1':>7}"]
    for r in b["rows"]:
        lines.append(f"{r['task']:7} {r['impl']:48} {r['seconds']:8.2f} {r['peak_mb']:8.0f} {r['top1']:7.2f}")
    for task in ("k-NN", "linear"):
        ours = next(r for r in b["rows"] if r["task"] == task and r["impl"].startswith("probes"))
        sk = next((r for r in b["rows"] if r["task"] == task and r["impl"].startswith("sklearn")), None)
        if sk:
            lines.append(f"{task}: {sk['seconds'] / max(ours['seconds'], 1e-9):.1f}x faster than scikit-learn, "
                         f"top-1 difference {ours['top1'] - sk['top1']:+.2f}")
    return "\n".join(lines)
