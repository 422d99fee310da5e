"""Few-shot: disjoint support/query, the CI formula, classifiers, low-shot curve."""
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from probes.fewshot import (ci95, default_lowshot_shots, fewshot_eval, group_by_class, logreg_predict,
                            lowshot_curve, sample_episode)
from transfer.errors import UserError


def test_support_and_query_never_overlap():
    labels = torch.tensor(np.repeat(np.arange(8), [30, 25, 20, 20, 21, 40, 22, 20]))
    by_class = group_by_class(labels)
    rng = np.random.default_rng(0)
    for _ in range(500):
        s, sy, q, qy = sample_episode(by_class, 5, 5, 15, rng)
        assert set(s.tolist()).isdisjoint(q.tolist())
        assert len(set(s.tolist())) == 25 and len(set(q.tolist())) == 75
        # episode labels are consistent: every support/query image of episode class j has one true class
        for j in range(5):
            true = set(labels[s[sy == j]].tolist()) | set(labels[q[qy == j]].tolist())
            assert len(true) == 1


def test_too_few_classes_is_a_clear_error():
    by_class = group_by_class(torch.tensor([0] * 30 + [1] * 30 + [2] * 5))
    with pytest.raises(UserError, match="only 2 have"):
        sample_episode(by_class, 3, 5, 15, np.random.default_rng(0))


def test_ci_formula():
    vals = [50.0, 60.0, 70.0, 80.0]
    mean, hw = ci95(vals)
    assert mean == 65.0
    std = math.sqrt(sum((v - 65.0) ** 2 for v in vals) / 4)  # population std (ddof = 0)
    assert hw == pytest.approx(1.96 * std / math.sqrt(4))


def test_fewshot_eval_on_separable_clusters_and_ci_reported():
    rng = np.random.default_rng(1)
    C, n, d = 10, 40, 16
    centers = rng.normal(size=(C, d)) * 5
    y = np.repeat(np.arange(C), n)
    x = centers[y] + rng.normal(size=(C * n, d))
    r = fewshot_eval(x, y, n_way=5, shots=(1, 5), n_query=15, episodes=60, chunk=25)
    for k in (1, 5):
        for c in ("proto", "logreg"):
            assert r["results"][k][c]["episodes"] == 60
            assert r["results"][k][c]["mean"] > 95
            assert 0 <= r["results"][k][c]["ci95"] < 5


def test_batched_logreg_matches_sklearn_per_episode():
    rng = np.random.default_rng(2)
    E, S, Q, D, N = 6, 10, 30, 8, 5
    xs = torch.tensor(rng.normal(size=(E, S, D)))
    ys = torch.tensor(np.tile(np.arange(N).repeat(S // N), (E, 1)))
    xq = torch.tensor(rng.normal(size=(E, Q, D)))
    pred = logreg_predict(xs, ys, xq, N, C=1.0, max_iter=500)
    agree = []
    for e in range(E):
        sk = LogisticRegression(C=1.0, max_iter=5000, tol=1e-10).fit(xs[e].numpy(), ys[e].numpy())
        agree.append((sk.predict(xq[e].numpy()) == pred[e].numpy()).mean())
    assert np.mean(agree) > 0.98


def test_lowshot_curve():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(4, 10)) * 3
    ytr, yte = np.repeat(np.arange(4), 20), np.repeat(np.arange(4), 10)
    xtr, xte = centers[ytr] + rng.normal(size=(80, 10)), centers[yte] + rng.normal(size=(40, 10))
    r = lowshot_curve(xtr, ytr, xte, yte, seeds=(0, 1))
    assert r["shots"] == [1, 2, 4, 8, 16] == default_lowshot_shots(20)
    assert r["results"][16]["proto"]["runs"] == 2
    assert r["results"][16]["logreg"]["mean"] >= r["results"][1]["logreg"]["mean"] - 5
    r = lowshot_curve(xtr, ytr, xte, yte, shots=(1, 64), seeds=(0,))
    assert r["shots"] == [1] and any("64" in w for w in r["warnings"])
