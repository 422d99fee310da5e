"""Probe benchmark: time and peak memory of our k-NN and linear probe against scikit-learn and
DINO's torch matmul+topk, on synthetic features (default 50,000 x 512 train, 10,000 x 512 test).

The k-NN is also timed against the two exact-search floors measured in the same process and
interleaved with it (``knn_reps`` rounds, order rotated each round, median reported): bare FAISS
``IndexFlatIP`` (add + one search) and bare torch matmul+topk (chunks of 1,024 queries), both on
already-normalised features. The project's time is the whole ``weighted_knn`` call (normalisation,
checks, backend choice -- a calibration the first time in a process -- search and vote); the ratio
to the faster floor is the number to read (target <= 1.1).

For ``transfer bench probes`` (the command lives in ``transfer.commands.bench``): call
:func:`bench_probes` and print :func:`format_bench`. Peak memory is the largest resident-set
increase over the baseline while a call runs (sampled every 5 ms from ``/proc/self/statm``, so a
lower bound on short spikes; 0 where ``/proc`` is missing).

The scikit-learn k-NN uses ``metric="cosine"``, brute force and weights ``exp(-d / T)`` with
``d = 1 - sim``: proportional to DINO's ``exp(sim / T)`` per query, so the same vote.
"""
from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .knn import _faiss, vote, weighted_knn
from .linear import default_sweep, fit_logreg, l2_to_C, linear_probe, stratified_split

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


def faiss_floor(xb: torch.Tensor, xq: torch.Tensor, k: int):
    """Bare FAISS exact search: ``IndexFlatIP`` over the (normalised) bank, one search of every query."""
    faiss = _faiss()
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(np.ascontiguousarray(xb.numpy()))
    s, i = index.search(np.ascontiguousarray(xq.numpy()), k)
    return torch.from_numpy(s), torch.from_numpy(i).long()


def torch_floor(xb: torch.Tensor, xq: torch.Tensor, k: int, chunk: int = 1024):
    """Bare torch exact search: matmul + topk over chunks of queries."""
    out = [(xq[lo:lo + chunk] @ xb.T).topk(k, dim=1) for lo in range(0, xq.shape[0], chunk)]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


def bench_knn_floors(xtr, ytr, xte, yte, k: int, T: float, classes: int, reps: int = 3) -> List[Dict[str, Any]]:
    """``probes.knn`` against the bare FAISS and torch floors, interleaved, ``reps`` rounds (median)."""
    ntr, nte = F.normalize(xtr, dim=1).contiguous(), F.normalize(xte, dim=1).contiguous()
    fns: Dict[str, Callable[[], Any]] = {
        "ours": lambda: weighted_knn(xtr, ytr, xte, yte, ks=(k,), T=T, num_classes=classes),
        "torch": lambda: torch_floor(ntr, nte, k)}
    if _faiss() is not None:
        fns["faiss"] = lambda: faiss_floor(ntr, nte, k)
    names = list(fns)
    times: Dict[str, List[float]] = {n: [] for n in names}
    peaks: Dict[str, float] = {n: 0.0 for n in names}
    outs: Dict[str, Any] = {}
    for r in range(max(1, reps)):
        for n in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
            outs[n], dt, mem = measure(fns[n])
            times[n].append(dt)
            peaks[n] = max(peaks[n], mem / 2**20)
    ours = outs["ours"]
    rows = [{"task": "k-NN", "impl": f"probes.knn ({ours['backend']})", "seconds": statistics.median(times["ours"]),
             "peak_mb": peaks["ours"], "top1": ours["top1"][k], "backend_reason": ours["backend_reason"],
             "all_seconds": times["ours"], "predictions": ours["predictions"][k]}]
    labels = {"faiss": "floor: bare faiss IndexFlatIP", "torch": "floor: bare torch matmul+topk"}
    for n in ("faiss", "torch"):
        if n not in outs:
            continue
        sims, idx = outs[n]
        pred = vote(sims, ytr[idx], k, T, classes).argmax(1)  # untimed: top-1 to check the same neighbours
        rows.append({"task": "k-NN floor", "impl": labels[n], "seconds": statistics.median(times[n]),
                     "peak_mb": peaks[n], "top1": float((pred == yte).double().mean() * 100),
                     "agree_with_ours": float((pred.numpy() == ours["predictions"][k]).mean()),
                     "all_seconds": times[n]})
    return rows


def bench_probes(n_train: int = 50_000, n_test: int = 10_000, dim: int = 512, k: int = 20, T: float = 0.07,
                 l2_steps: int = 10, classes: int = 10, seed: int = 0, with_sklearn: bool = True,
                 knn_reps: int = 3, with_linear: bool = True) -> Dict[str, Any]:
    """Time / peak memory / accuracy of each implementation; ``rows`` is a list of dicts."""
    xtr, ytr, xte, yte = synthetic_features(n_train, n_test, dim, classes, seed)
    rows: List[Dict[str, Any]] = []
    # one-time warm-up (torch autograd / L-BFGS first-call set-up, FAISS import), not timed
    if with_linear:
        fit_logreg(xtr[:64], ytr[:64], classes, 1e-3, max_iter=5)
    weighted_knn(xtr[:64], ytr[:64], xte[:8], yte[:8], ks=(5,), num_classes=classes)
    knn_rows = bench_knn_floors(xtr, ytr, xte, yte, k, T, classes, reps=knn_reps)
    rows.extend(knn_rows)
    ours_pred = knn_rows[0]["predictions"]
    pred, dt, mem = measure(lambda: dino_torch_knn(xtr, ytr, xte, yte, k, T, classes))
    rows.append({"task": "k-NN", "impl": "torch matmul+topk (DINO shape)", "seconds": dt, "peak_mb": mem / 2**20,
                 "top1": float((pred == yte.numpy()).mean() * 100), "agree_with_ours": float((pred == ours_pred).mean())})
    if not with_linear:
        return {"n_train": n_train, "n_test": n_test, "dim": dim, "k": k, "T": T, "l2_steps": 0,
                "threads": torch.get_num_threads(), "knn_reps": knn_reps, "rows": rows}
    sweep = default_sweep(l2_steps, 1e-6, 1e1)
    lin, dt, mem = measure(lambda: linear_probe(xtr, ytr, xte, yte, l2_values=sweep, seed=seed, num_classes=classes))
    rows.append({"task": "linear", "impl": f"probes.linear (torch L-BFGS, warm-started, patience {lin['patience']}: "
                                           f"{len(lin['sweep'])}/{len(sweep)} sweep values fitted)", "seconds": dt,
                 "peak_mb": mem / 2**20, "top1": lin["top1"], "best_C": lin["best_C"]})
    if with_sklearn:
        # scikit-learn is optional (the probes/test extra)
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import KNeighborsClassifier

        knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                                   weights=lambda d: np.exp(-d / T))
        pred, dt, mem = measure(lambda: knn.fit(xtr.numpy(), ytr.numpy()).predict(xte.numpy()))
        rows.append({"task": "k-NN", "impl": "sklearn KNeighborsClassifier (brute, cosine)", "seconds": dt,
                     "peak_mb": mem / 2**20, "top1": float((pred == yte.numpy()).mean() * 100),
                     "agree_with_ours": float((pred == ours_pred).mean())})
        # the same sweep on the same split and standardisation, then the same refit

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
            "threads": torch.get_num_threads(), "knn_reps": knn_reps, "rows": rows}


def knn_floor_ratio(b: Dict[str, Any]) -> float:
    """``probes.knn`` seconds / the faster floor's seconds (target <= 1.1)."""
    ours = next(r for r in b["rows"] if r["task"] == "k-NN" and r["impl"].startswith("probes"))
    floor = min(r["seconds"] for r in b["rows"] if r["task"] == "k-NN floor")
    return ours["seconds"] / max(floor, 1e-9)


def format_bench(b: Dict[str, Any]) -> str:
    """A plain-text table of :func:`bench_probes` output, with speed-ups against scikit-learn."""
    lines = [f"probe benchmark: {b['n_train']} x {b['dim']} train, {b['n_test']} test, k={b['k']}, "
             f"{b['l2_steps']} L2 values, {b['threads']} torch threads",
             f"{'task':10} {'implementation':48} {'s':>8} {'peak MB':>8} {'top-1':>7}"]
    for r in b["rows"]:
        lines.append(f"{r['task']:10} {r['impl']:48} {r['seconds']:8.2f} {r['peak_mb']:8.0f} {r['top1']:7.2f}")
    ours = next(r for r in b["rows"] if r["task"] == "k-NN" and r["impl"].startswith("probes"))
    lines.append(f"k-NN backend: {ours['impl'][len('probes.knn ('):-1]} ({ours['backend_reason']})")
    floors = [r for r in b["rows"] if r["task"] == "k-NN floor"]
    if floors:
        fast = min(floors, key=lambda r: r["seconds"])
        lines.append(f"k-NN: probes.knn / faster floor ({fast['impl'][len('floor: '):]}) = {knn_floor_ratio(b):.3f} "
                     f"(target <= 1.10; median of {b.get('knn_reps', 1)} interleaved rounds)")
    for task in ("k-NN", "linear"):
        if not any(r["task"] == task for r in b["rows"]):
            continue
        ours = next(r for r in b["rows"] if r["task"] == task and r["impl"].startswith("probes"))
        sk = next((r for r in b["rows"] if r["task"] == task and r["impl"].startswith("sklearn")), None)
        if sk:
            lines.append(f"{task}: {sk['seconds'] / max(ours['seconds'], 1e-9):.1f}x faster than scikit-learn, "
                         f"top-1 difference {ours['top1'] - sk['top1']:+.2f}")
    return "\n".join(lines)
