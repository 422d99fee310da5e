"""Weighted k-NN probe (DINO's protocol) on an exact inner-product search (FAISS or torch).

Protocol, after facebookresearch/dino ``eval_knn.py`` (``knn_classifier``) and the same vote in
lightly ``lightly/utils/benchmarking/knn.py`` / solo-learn ``solo/utils/knn.py``: features are
L2-normalised, the k most cosine-similar train images vote for their class with weight
``exp(sim / T)`` (T = 0.07), the class with the largest summed weight wins. Top-5 counts a hit when
the true class is among the 5 highest-scoring classes *and* has a non-zero score.

Differences from DINO's code, stated:
- one search for ``max(k)`` neighbours serves every k (DINO searches once per k);
- the search backend is the faster exact one for the machine (:func:`select_backend`: FAISS on GPU;
  on CPU faiss-cpu flat IP or torch matmul+topk, by a calibration or by what faiss's BLAS reports);
- chunks are a fixed number of queries (DINO's ``num_test // 100`` is 0 below 100 test images);
- k larger than the bank is clamped to the bank size and reported (DINO's ``topk`` raises);
- weights are ``exp((sim - sim_max) / T)`` per query: the same ranking, no float overflow at small T;
- ties between classes are broken towards the lower class index.
"""
from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from transfer.errors import UserError

from .checks import ArrayLike, as_tensor, check_pair, infer_num_classes

PROTOCOL = "weighted k-NN (DINO eval_knn.py): cosine on L2-normalised features, vote exp(sim/T)"


def _faiss():
    try:
        # faiss is optional (k-NN falls back to torch)
        import faiss  # type: ignore

        return faiss
    except ImportError:
        return None


# ----------------------------------------------------------------------------- backend choice
ENV_BACKEND = "TRANSFER_KNN_BACKEND"
BACKENDS = ("auto", "faiss", "torch")
# OpenBLAS core types without a vector GEMM kernel of their own: the flat-IP search then runs
# several times slower than torch's BLAS on the same CPU (issue 17 section 5).
GENERIC_BLAS_CORES = ("prescott", "generic", "core2", "atom", "katmai", "coppermine", "northwood",
                      "penryn", "dunnington", "banias", "opteron", "athlon", "barcelona", "nano")
# below this many multiply-adds (bank x queries x dim) the search takes milliseconds either way
# and calibrating would cost more than it can save: torch (no index copy) runs without timing
CALIBRATE_MIN_WORK = 2e8
CALIBRATE_CHUNK = 1024  # queries in the first calibration chunk (the second has twice as many; all real work)
TORCH_BLOCK = 1 << 26  # floats in one (queries x bank shard) similarity block on the torch path: 256 MB
CPU_BACKENDS = ("faiss-cpu", "torch")
# (dim, torch threads, faiss threads) -> {backend: (seconds per call per bank row, seconds per query per bank row)}
_CALIBRATION: Dict[Tuple, Dict[str, Tuple[float, float]]] = {}


def faiss_blas_core(faiss=None) -> Optional[str]:
    """The core type faiss-cpu's BLAS reports through threadpoolctl (e.g. ``SkylakeX``, ``Prescott``),
    or ``None`` where threadpoolctl is missing or the faiss library's BLAS is not found."""
    faiss = faiss or _faiss()
    if faiss is None:
        return None
    try:
        # threadpoolctl comes with scikit-learn, optional
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for lib in threadpool_info():
        path = str(lib.get("filepath", "")).lower()
        if lib.get("user_api") == "blas" and "faiss" in path and lib.get("architecture"):
            return str(lib["architecture"])
    return None


def _calibration_key(d: int) -> Tuple:
    faiss = _faiss()
    ft = int(faiss.omp_get_max_threads()) if faiss is not None and hasattr(faiss, "omp_get_max_threads") else 0
    return (int(d), torch.get_num_threads(), ft)


def _run_timed(name: str, fn, n_queries: int):
    """``(fn(), seconds)``; ``name`` and ``n_queries`` let tests substitute a timing model."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def fit_cost(t1: float, t2: float, q1: int, q2: int) -> Tuple[float, float]:
    """``(per-call seconds, per-query seconds)`` of a line through two chunk timings (q1 < q2);
    a non-increasing pair (noise) is read as no per-call cost."""
    slope = (t2 - t1) / (q2 - q1)
    if slope <= 0:
        return 0.0, min(t1 / q1, t2 / q2)
    return max(0.0, t1 - slope * q1), slope


def predict_seconds(model: Tuple[float, float], n: int, q: int, calls: int) -> float:
    """Seconds for ``q`` queries against ``n`` bank rows in ``calls`` calls, from a per-bank-row model."""
    per_call, per_query = model
    return n * (per_call * calls + per_query * q)


def decide(models: Dict[str, Tuple[float, float]], n: int, q: int, query_chunk: int, torch_chunk: int) -> Tuple[str, str]:
    """The CPU backend with the smaller predicted time for ``q`` queries, and the numbers."""
    calls = {"faiss-cpu": -(-q // query_chunk), "torch": -(-q // torch_chunk)}
    t = {b: predict_seconds(models[b], n, q, calls[b]) for b in CPU_BACKENDS}
    name = min(CPU_BACKENDS, key=lambda b: (t[b], b != "faiss-cpu"))
    other = "torch" if name == "faiss-cpu" else "faiss-cpu"
    return name, f"{name} predicted {t[name]:.2f} s vs {other} {t[other]:.2f} s for the remaining {q} queries"


def select_backend(bank: torch.Tensor, queries: torch.Tensor, k: int, device: str = "cpu",
                   backend: Optional[str] = None) -> Tuple[str, str]:
    """The exact search backend for this problem and machine, and why: ``(name, reason)``.

    Order: a forced choice (``backend`` argument, else the ``TRANSFER_KNN_BACKEND`` environment
    variable: ``auto``/``faiss``/``torch``); on ``cuda`` a FAISS GPU index (faiss-gpu), else torch on
    the GPU; on CPU torch where faiss is missing, the problem is tiny, or faiss's BLAS reports a
    generic kernel (:data:`GENERIC_BLAS_CORES`); otherwise ``"calibrate"``: :func:`knn_search` runs
    the first queries with both backends (real work, kept), fits each one's per-call and per-query
    cost, and runs the rest with the faster (the fit is cached per process for the feature dimension
    and thread counts, so later searches decide without timing). Every backend returns the same
    neighbours (ties aside).
    """
    src = "backend argument"
    if backend is None:
        backend, src = os.environ.get(ENV_BACKEND, "") or "auto", f"{ENV_BACKEND}"
    backend = str(backend).strip().lower()
    if backend not in BACKENDS:
        raise UserError(f"k-NN: unknown backend {backend!r} ({src}); choose one of {', '.join(BACKENDS)}")
    faiss = _faiss()
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        cuda = False
    faiss_gpu = faiss is not None and cuda and hasattr(faiss, "StandardGpuResources")
    if backend == "faiss":
        if faiss is None:
            raise UserError(f"k-NN: backend 'faiss' requested ({src}) but faiss is not installed "
                            f"(pip install faiss-cpu)")
        return ("faiss-gpu" if faiss_gpu else "faiss-cpu"), f"forced by {src}"
    if backend == "torch":
        return ("torch-cuda" if cuda else "torch"), f"forced by {src}"
    if cuda:
        if faiss_gpu:
            return "faiss-gpu", "CUDA device with faiss-gpu"
        return "torch-cuda", "CUDA device without faiss-gpu: torch matmul+topk on the GPU"
    if faiss is None:
        return "torch", "faiss is not installed"
    n, q, d = bank.shape[0], queries.shape[0], bank.shape[1]
    if float(n) * q * d < CALIBRATE_MIN_WORK:
        return "torch", f"small problem ({n} x {q} x {d} < {CALIBRATE_MIN_WORK:.0e} multiply-adds): no calibration"
    core = faiss_blas_core(faiss)
    if core is not None and core.lower() in GENERIC_BLAS_CORES:
        return "torch", f"faiss's bundled OpenBLAS runs the generic '{core}' kernel on this CPU (threadpoolctl)"
    if _calibration_key(d) in _CALIBRATION:
        return "calibrate", "cost fit cached for this process"
    if q < 6 * 32:
        return "torch", f"only {q} queries: too few to calibrate on"
    return "calibrate", "calibrated on the first queries"


def knn_search(bank: torch.Tensor, queries: torch.Tensor, k: int, *, device: str = "cpu",
               query_chunk: int = 8192, bank_shard: int = 1_000_000,
               backend: Optional[str] = None, info: Optional[Dict] = None) -> Tuple[torch.Tensor, torch.Tensor, str]:
    """Exact top-k inner products of ``queries`` against ``bank`` (both already normalised).

    Returns ``(sims (Q, k) float32, indices (Q, k) int64, backend)``. ``backend`` (argument) is
    ``auto`` / ``faiss`` / ``torch``, a name :func:`select_backend` returns (``faiss-gpu``,
    ``faiss-cpu``, ``torch``, ``torch-cuda``, ``calibrate``), or ``None`` (:func:`select_backend`
    decides). ``calibrate``: query chunks of ``c``, ``c``, ``2c``, ``2c`` queries
    (``c = min(CALIBRATE_CHUNK, Q // 6)``) run interleaved on faiss-cpu and torch, their timings fit
    ``seconds = per_call + per_query * queries`` per backend (faiss pays a per-call cost that grows
    with the bank), and the rest runs on the backend predicted faster; the fit is cached per process.
    ``info`` (a dict), when given, receives ``backend``, ``reason`` and the calibration timings.
    Queries go in chunks of ``query_chunk`` (on the torch path also at most ``TORCH_BLOCK / bank
    rows``) and the bank in shards of ``bank_shard`` rows whose top-k lists are merged, so peak extra
    memory is about ``TORCH_BLOCK`` floats on the torch path and ``query_chunk * 2k`` on the FAISS
    path (plus the index's copy of the bank).
    """
    reason = "given"
    if backend not in ("faiss-gpu", "faiss-cpu", "torch", "torch-cuda", "calibrate"):
        backend, reason = select_backend(bank, queries, k, device, backend)
    n, q = bank.shape[0], queries.shape[0]
    k = min(k, n)
    torch_chunk = max(1, min(query_chunk, TORCH_BLOCK // max(1, min(bank_shard, n))))
    key = _calibration_key(bank.shape[1])
    if backend == "calibrate" and key in _CALIBRATION:  # decided from the cached fit, before any index is built
        backend, why = decide(_CALIBRATION[key], n, q, query_chunk, torch_chunk)
        reason = f"cost fit cached for this process: {why}"
    out_s = torch.empty(q, k, dtype=torch.float32)
    out_i = torch.empty(q, k, dtype=torch.int64)
    shards = [(lo, min(lo + bank_shard, n)) for lo in range(0, n, bank_shard)]
    indexes = []
    if backend.startswith("faiss") or backend == "calibrate":
        faiss = _faiss()
        res = faiss.StandardGpuResources() if backend == "faiss-gpu" else None
        for lo, hi in shards:
            xb = np.ascontiguousarray(bank[lo:hi].float().cpu().numpy())
            idx = faiss.GpuIndexFlatIP(res, xb.shape[1]) if res is not None else faiss.IndexFlatIP(xb.shape[1])
            idx.add(xb)
            indexes.append(idx)
    dev = torch.device(device if backend == "torch-cuda" else "cpu")
    tbank, tqueries = bank.float().to(dev), queries.float().to(dev)

    def merge(best, s, i):
        if best is None:
            return s, i
        cat_s, cat_i = torch.cat([best[0], s], 1), torch.cat([best[1], i], 1)
        top_s, pos = cat_s.topk(min(k, cat_s.shape[1]), dim=1)
        return top_s, cat_i.gather(1, pos)

    def run_faiss(qlo: int, qhi: int) -> None:
        for clo in range(qlo, qhi, query_chunk):
            chi = min(clo + query_chunk, qhi)
            xq = np.ascontiguousarray(queries[clo:chi].float().cpu().numpy())
            best = None
            for (lo, hi), index in zip(shards, indexes):
                s_np, i_np = index.search(xq, min(k, hi - lo))
                best = merge(best, torch.from_numpy(s_np), torch.from_numpy(i_np).long() + lo)
            out_s[clo:chi], out_i[clo:chi] = best

    def run_torch(qlo: int, qhi: int) -> None:
        for clo in range(qlo, qhi, torch_chunk):
            chi = min(clo + torch_chunk, qhi)
            best = None
            for lo, hi in shards:
                s, i = (tqueries[clo:chi] @ tbank[lo:hi].T).topk(min(k, hi - lo), dim=1)
                best = merge(best, s.cpu(), i.cpu() + lo)
            out_s[clo:chi], out_i[clo:chi] = best

    runners = {"faiss-cpu": run_faiss, "faiss-gpu": run_faiss, "torch": run_torch, "torch-cuda": run_torch}
    start = 0
    calib: Dict[str, List[float]] = {}
    if backend == "calibrate":
        c = max(1, min(CALIBRATE_CHUNK, q // 6))
        for size, order in ((c, CPU_BACKENDS), (2 * c, CPU_BACKENDS[::-1])):  # interleaved, order swapped
            for b in order:
                lo, start = start, start + size
                _, dt = _run_timed(b, lambda: runners[b](lo, start), size)
                calib.setdefault(b, []).append(dt)
        _CALIBRATION[key] = {b: tuple(v / n for v in fit_cost(t[0], t[1], c, 2 * c)) for b, t in calib.items()}
        backend, why = decide(_CALIBRATION[key], n, q - start, query_chunk, torch_chunk)
        timings = "; ".join(f"{b} {t[0]:.2f}/{t[1]:.2f} s" for b, t in calib.items())
        reason = f"calibrated on the first {start} queries ({c}/{2 * c}-query chunks: {timings}): {why}"
    runners[backend](start, q)
    if info is not None:
        info.update(backend=backend, reason=reason, calibration_seconds=calib)
    return out_s, out_i, backend


def vote(sims: torch.Tensor, neighbour_labels: torch.Tensor, k: int, T: float, num_classes: int) -> torch.Tensor:
    """Class scores (Q, C) from the first ``k`` neighbours: sum of ``exp((sim - sim_max)/T)`` per class."""
    s = sims[:, :k].double()
    w = torch.exp((s - s[:, :1]) / T)  # neighbours are sorted, so column 0 holds the row max
    scores = torch.zeros(s.shape[0], num_classes, dtype=torch.float64)
    scores.scatter_add_(1, neighbour_labels[:, :k], w)
    return scores


def _rank_predictions(scores: torch.Tensor, top: int) -> torch.Tensor:
    """Top classes by score, ties to the lower class index (stable sort on the negated scores)."""
    order = torch.sort(-scores, dim=1, stable=True).indices
    return order[:, :top]


def per_class_accuracy(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> List[Optional[float]]:
    """Accuracy (%) per class; ``None`` for a class with no test image."""
    out: List[Optional[float]] = []
    for c in range(num_classes):
        m = target == c
        out.append(float((pred[m] == c).float().mean() * 100) if bool(m.any()) else None)
    return out


def weighted_knn(train_feats: ArrayLike, train_labels: ArrayLike, test_feats: ArrayLike,
                 test_labels: ArrayLike, ks: Sequence[int] = (10, 20, 100, 200), T: float = 0.07,
                 num_classes: Optional[int] = None, device: str = "cpu",
                 query_chunk: int = 8192, backend: Optional[str] = None) -> Dict:
    """DINO's weighted k-NN accuracy for several k from one search.

    Args:
        train_feats, test_feats: (N, D) features (torch tensors or numpy arrays); normalised here.
        train_labels, test_labels: (N,) integer labels in ``[0, num_classes)``.
        ks: neighbour counts; each k > the bank size is clamped (``k_effective``) with a warning.
        T: vote temperature. num_classes: defaults to ``max(label) + 1``.
        device: ``cuda`` uses a FAISS GPU index when faiss-gpu is installed (else torch on the GPU).
        backend: ``auto`` / ``faiss`` / ``torch``; ``None`` reads ``TRANSFER_KNN_BACKEND`` (default
            ``auto``: the faster exact backend for this machine, see :func:`select_backend`).

    Returns a dict: ``top1`` / ``top5`` / ``per_class`` / ``k_effective`` keyed by requested k
    (accuracies in %), ``best_k`` and ``best_top1``, ``predictions`` (k -> int64 numpy array of
    top-1 classes; not for JSON), ``n_train``, ``n_test``, ``num_classes``, ``T``, ``ks``,
    ``backend`` and ``backend_reason`` (which search ran and why), ``protocol`` and ``warnings`` (list of strings for the report).
    Raises :class:`~transfer.errors.UserError` on empty splits, NaN/inf features, shape mismatches.
    """
    xb = as_tensor(train_feats, torch.float32)
    xq = as_tensor(test_feats, torch.float32)
    yb = as_tensor(train_labels, torch.int64).cpu()
    yq = as_tensor(test_labels, torch.int64).cpu()
    if not ks or any(int(k) < 1 for k in ks):
        raise UserError(f"k-NN: every k must be >= 1, got {list(ks)}")
    if T <= 0:
        raise UserError(f"k-NN: temperature must be > 0, got {T}")
    num_classes = int(num_classes or infer_num_classes(yb, yq))
    warnings = check_pair(xb, xq, yb, yq, num_classes)
    xb = torch.nn.functional.normalize(xb, dim=1)
    xq = torch.nn.functional.normalize(xq, dim=1)
    ks = [int(k) for k in ks]
    kmax = min(max(ks), xb.shape[0])
    backend, reason = select_backend(xb, xq, kmax, device, backend)
    info: Dict = {}
    sims, idx, backend = knn_search(xb, xq, kmax, device=device, query_chunk=query_chunk, backend=backend, info=info)
    if info.get("reason") and info["reason"] != "given":  # decided inside the search (calibration)
        reason = info["reason"]
    nlab = yb[idx]
    res: Dict = {"protocol": PROTOCOL, "T": T, "ks": ks, "n_train": int(xb.shape[0]),
                 "n_test": int(xq.shape[0]), "num_classes": num_classes, "feature_dim": int(xb.shape[1]),
                 "backend": backend, "backend_reason": reason, "top1": {}, "top5": {}, "per_class": {}, "k_effective": {},
                 "predictions": {}, "warnings": warnings}
    for k in ks:
        ke = min(k, kmax)
        if ke < k:
            res["warnings"].append(f"k={k} exceeds the {xb.shape[0]} train images: used k={ke}")
        scores = vote(sims, nlab, ke, T, num_classes)
        top = _rank_predictions(scores, min(5, num_classes))
        pred = top[:, 0]
        hit5 = (top == yq[:, None]).any(1) & (scores.gather(1, yq[:, None]).squeeze(1) > 0)
        res["top1"][k] = float((pred == yq).double().mean() * 100)
        res["top5"][k] = float(hit5.double().mean() * 100)
        res["per_class"][k] = per_class_accuracy(pred, yq, num_classes)
        res["k_effective"][k] = ke
        res["predictions"][k] = pred.numpy()
    res["best_k"] = max(ks, key=lambda k: (res["top1"][k], -k))
    res["best_top1"] = res["top1"][res["best_k"]]
    return res
