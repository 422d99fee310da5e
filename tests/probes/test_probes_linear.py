"""Fast linear probe: same optimum as scikit-learn at the same regularisation (C = 1 / (l2 n))."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from probes.linear import C_to_l2, default_sweep, fit_logreg, l2_to_C, linear_probe, stratified_split


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))
    X, y = X[perm], y[perm]
    mu, sd = X[:1300].mean(0), X[:1300].std(0) + 1e-8
    X = (X - mu) / sd
    return X[:1300], y[:1300], X[1300:], y[1300:]


@pytest.mark.parametrize("C", [0.01, 0.3, 10.0])
def test_fit_matches_sklearn(digits, C):
    Xtr, ytr, Xte, yte = digits
    sk = LogisticRegression(C=C, max_iter=5000, tol=1e-8).fit(Xtr, ytr)
    W, b = fit_logreg(torch.tensor(Xtr, dtype=torch.float32), torch.tensor(ytr), 10, C_to_l2(C, len(ytr)))
    ours = (torch.tensor(Xte, dtype=torch.float32) @ W.T + b).argmax(1).numpy()
    acc_ours, acc_sk = (ours == yte).mean() * 100, (sk.predict(Xte) == yte).mean() * 100
    assert abs(acc_ours - acc_sk) <= 0.5
    assert np.abs(W.numpy() - sk.coef_).max() < 0.05 * max(1.0, np.abs(sk.coef_).max())


def test_mapping_round_trip():
    assert l2_to_C(C_to_l2(0.7, 1234), 1234) == pytest.approx(0.7)


def test_probe_with_sweep_matches_sklearn_at_chosen_C(digits):
    Xtr, ytr, Xte, yte = digits
    r = linear_probe(Xtr, ytr, Xte, yte, l2_values=default_sweep(10, 1e-5, 1e1), standardize=False)
    assert len(r["sweep"]) == 10 and r["n_train"] + r["n_val"] == len(ytr)
    assert r["sweep"][0]["l2"] > r["sweep"][-1]["l2"]  # strongest first (warm starts)
    sk = LogisticRegression(C=r["best_C"], max_iter=5000, tol=1e-8).fit(Xtr, ytr)
    assert abs(r["top1"] - (sk.predict(Xte) == yte).mean() * 100) <= 0.5
    assert r["top1"] > 90 and r["top5"] >= r["top1"]
    assert "predictions" in r and len(r["per_class"]) == 10


def test_stratified_split_is_disjoint_and_covers():
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 1)
    tr, va = stratified_split(y, 0.2, seed=0)
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(16))
    assert (y[va] == 0).sum() == 2 and (y[va] == 1).sum() == 1 and (y[va] == 2).sum() == 0
