"""Weighted k-NN probe (DINO's protocol) on FAISS exact inner-product search.

Protocol, after facebookresearch/dino ``eval_knn.py`` (``knn_classifier``) and the same vote in
lightly ``lightly/utils/benchmarking/knn.py`` / solo-learn ``solo/utils/knn.py``: features are
L2-normalised, the k most cosine-similar train images vote for their class with weight
``exp(sim / T)`` (T = 0.07), the class with the largest summed weight wins. Top-5 counts a hit when
the true class is among the 5 highest-scoring classes *and* has a non-zero score.

Differences from DINO's code, stated:
- one FAISS search for ``max(k)`` neighbours serves every k (DINO searches once per k);
- chunks are a fixed number of queries (DINO's ``num_test // 100`` is 0 below 100 test images);
- k larger than the bank is clamped to the bank size and reported (DINO's ``topk`` raises);
- weights are ``exp((sim - sim_max) / T)`` per query: the same ranking, no float overflow at small T;
- ties between classes are broken towards the lower class index.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .checks import ArrayLike, as_tensor, check_pair, infer_num_classes

PROTOCOL = "weighted k-NN (DINO eval_knn.py): cosine on L2-normalised features, vote exp(sim/T)"


def _faiss():
    try:
        import faiss  # type: ignore

        return faiss
    except ImportError:
        return None


def knn_search(bank: torch.Tensor, queries: torch.Tensor, k: int, *, device: str = "cpu",
               query_chunk: int = 8192, bank_shard: int = 1_000_000) -> Tuple[torch.Tensor, torch.Tensor, str]:
    """Exact top-k inner products of ``queries`` against ``bank`` (both already normalised).

    Returns ``(sims (Q, k) float32, indices (Q, k) int64, backend)``. Queries go in chunks of
    ``query_chunk`` and the bank in shards of ``bank_shard`` rows whose top-k lists are merged, so
    peak extra memory is about ``query_chunk * (bank_shard + 2k)`` floats on the torch path and
    ``query_chunk * 2k`` on the FAISS path. Backend: a FAISS GPU index when faiss-gpu and a CUDA
    device are present and ``device`` is ``cuda``; FAISS CPU otherwise; torch matmul+topk without FAISS.
    """
    faiss = _faiss()
    n, q = bank.shape[0], queries.shape[0]
    k = min(k, n)
    use_gpu = (faiss is not None and device.startswith("cuda") and torch.cuda.is_available()
               and hasattr(faiss, "StandardGpuResources"))
    backend = "faiss-gpu" if use_gpu else ("faiss-cpu" if faiss is not None else "torch")
    out_s = torch.empty(q, k, dtype=torch.float32)
    out_i = torch.empty(q, k, dtype=torch.int64)
    shards = [(lo, min(lo + bank_shard, n)) for lo in range(0, n, bank_shard)]
    indexes = []
    if faiss is not None:
        res = faiss.StandardGpuResources() if use_gpu else None
        for lo, hi in shards:
            xb = np.ascontiguousarray(bank[lo:hi].float().cpu().numpy())
            idx = faiss.GpuIndexFlatIP(res, xb.shape[1]) if use_gpu else faiss.IndexFlatIP(xb.shape[1])
            idx.add(xb)
            indexes.append(idx)
    for qlo in range(0, q, query_chunk):
        qhi = min(qlo + query_chunk, q)
        best_s: Optional[torch.Tensor] = None
        best_i: Optional[torch.Tensor] = None
        for si, (lo, hi) in enumerate(shards):
            kk = min(k, hi - lo)
            if faiss is not None:
                xq = np.ascontiguousarray(queries[qlo:qhi].float().cpu().numpy())
                s_np, i_np = indexes[si].search(xq, kk)
                s, i = torch.from_numpy(s_np), torch.from_numpy(i_np).long() + lo
            else:
                sim = queries[qlo:qhi].float() @ bank[lo:hi].float().T
                s, i = sim.topk(kk, dim=1)
                s, i = s.cpu(), i.cpu() + lo
            if best_s is None:
                best_s, best_i = s, i
            else:  # merge two sorted top-k lists
                cat_s, cat_i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
                best_s, pos = cat_s.topk(min(k, cat_s.shape[1]), dim=1)
                best_i = cat_i.gather(1, pos)
        out_s[qlo:qhi], out_i[qlo:qhi] = best_s, best_i
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
                 query_chunk: int = 8192) -> Dict:
    """DINO's weighted k-NN accuracy for several k from one search.

    Args:
        train_feats, test_feats: (N, D) features (torch tensors or numpy arrays); normalised here.
        train_labels, test_labels: (N,) integer labels in ``[0, num_classes)``.
        ks: neighbour counts; each k > the bank size is clamped (``k_effective``) with a warning.
        T: vote temperature. num_classes: defaults to ``max(label) + 1``.
        device: ``cuda`` uses a FAISS GPU index when faiss-gpu is installed.

    Returns a dict: ``top1`` / ``top5`` / ``per_class`` / ``k_effective`` keyed by requested k
    (accuracies in %), ``best_k`` and ``best_top1``, ``predictions`` (k -> int64 numpy array of
    top-1 classes; not for JSON), ``n_train``, ``n_test``, ``num_classes``, ``T``, ``ks``,
    ``backend``, ``protocol`` and ``warnings`` (list of strings for the report).
    Raises :class:`~transfer.errors.UserError` on empty splits, NaN/inf features, shape mismatches.
    """
    xb = as_tensor(train_feats, torch.float32)
    xq = as_tensor(test_feats, torch.float32)
    yb = as_tensor(train_labels, torch.int64).cpu()
    yq = as_tensor(test_labels, torch.int64).cpu()
    if not ks or any(int(k) < 1 for k in ks):
        from transfer.errors import UserError

        raise UserError(f"k-NN: every k must be >= 1, got {list(ks)}")
    if T <= 0:
        from transfer.errors import UserError

        raise UserError(f"k-NN: temperature must be > 0, got {T}")
    num_classes = int(num_classes or infer_num_classes(yb, yq))
    warnings = check_pair(xb, xq, yb, yq, num_classes)
    xb = torch.nn.functional.normalize(xb, dim=1)
    xq = torch.nn.functional.normalize(xq, dim=1)
    ks = [int(k) for k in ks]
    kmax = min(max(ks), xb.shape[0])
    sims, idx, backend = knn_search(xb, xq, kmax, device=device, query_chunk=query_chunk)
    nlab = yb[idx]
    res: Dict = {"protocol": PROTOCOL, "T": T, "ks": ks, "n_train": int(xb.shape[0]),
                 "n_test": int(xq.shape[0]), "num_classes": num_classes, "feature_dim": int(xb.shape[1]),
                 "backend": backend, "top1": {}, "top5": {}, "per_class": {}, "k_effective": {},
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
