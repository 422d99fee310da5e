"""k-NN backend choice (issue 17 section 5): the faster exact backend for the machine, chosen by
what faiss's BLAS reports or by a calibration (cached per process), or forced; every backend gives
the same neighbours. Timings and BLAS reports are monkeypatched: no assertion depends on speed."""
import types

import numpy as np
import pytest
import torch

from probes import knn as knn_mod
from probes.knn import knn_search, select_backend, weighted_knn
from probes.report import knn_section
from transfer.errors import UserError

pytest.importorskip("faiss")


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(knn_mod.ENV_BACKEND, raising=False)
    monkeypatch.setattr(knn_mod, "_CALIBRATION", {})


def _problem(n=400, q=60, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    xb = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    xq = torch.nn.functional.normalize(torch.randn(q, d, generator=g), dim=1)
    return xb, xq


def _no_calibration(name, fn, n_queries):
    raise AssertionError("no calibration may run here")


def test_generic_blas_kernel_chooses_torch_without_calibrating(monkeypatch):
    xb, xq = _problem()
    monkeypatch.setattr(knn_mod, "CALIBRATE_MIN_WORK", 0)
    monkeypatch.setattr(knn_mod, "faiss_blas_core", lambda faiss=None: "Prescott")
    monkeypatch.setattr(knn_mod, "_run_timed", _no_calibration)
    name, why = select_backend(xb, xq, 10)
    assert name == "torch" and "Prescott" in why
    assert knn_search(xb, xq, 10)[2] == "torch"


def _model(costs):
    """A timing model: ``costs[backend] = (per call, per query)`` seconds; the chunk still runs."""
    calls = []

    def fake(name, fn, n_queries):
        calls.append((name, n_queries))
        return fn(), costs[name][0] + costs[name][1] * n_queries
    return fake, calls


@pytest.mark.parametrize("costs,expected", [
    ({"faiss-cpu": (0.0, 1e-4), "torch": (0.0, 5e-4)}, "faiss-cpu"),   # faiss's kernel is faster
    ({"faiss-cpu": (0.0, 5e-4), "torch": (0.0, 1e-4)}, "torch"),        # e.g. faiss's BLAS on a generic core
    # per-query faiss is faster but its per-call cost is not repaid by the 1,000 queries left
    ({"faiss-cpu": (1.0, 1e-4), "torch": (0.0, 5e-4)}, "torch"),
])
def test_calibration_picks_the_faster_and_is_cached(monkeypatch, costs, expected):
    xb, xq = _problem(n=400, q=1000)
    monkeypatch.setattr(knn_mod, "CALIBRATE_MIN_WORK", 0)
    monkeypatch.setattr(knn_mod, "CALIBRATE_CHUNK", 50)
    monkeypatch.setattr(knn_mod, "faiss_blas_core", lambda faiss=None: "SkylakeX")
    fake, calls = _model(costs)
    monkeypatch.setattr(knn_mod, "_run_timed", fake)
    assert select_backend(xb, xq, 10)[0] == "calibrate"
    info = {}
    s, i, name = knn_search(xb, xq, 10, info=info)
    assert name == expected and info["backend"] == expected and "calibrated on the first 300 queries" in info["reason"]
    assert calls == [("faiss-cpu", 50), ("torch", 50), ("torch", 100), ("faiss-cpu", 100)]  # interleaved
    ref_s, ref_i, _ = knn_search(xb, xq, 10, backend="faiss")
    assert torch.equal(i, ref_i)  # the calibration chunks' results are kept: every query answered
    # same process, dimension and threads: decided from the cached fit, no timing
    monkeypatch.setattr(knn_mod, "_run_timed", _no_calibration)
    res = weighted_knn(xb, torch.arange(len(xb)) % 3, xq, torch.arange(len(xq)) % 3, ks=(5,))
    assert res["backend"] == expected and "cached" in res["backend_reason"]


def test_fit_cost():
    assert knn_mod.fit_cost(1.0 + 0.5, 1.0 + 1.0, 50, 100) == pytest.approx((1.0, 0.01))
    assert knn_mod.fit_cost(2.0, 1.0, 50, 100) == (0.0, 0.01)  # noise: no per-call cost


def test_small_problem_and_missing_faiss_use_torch(monkeypatch):
    xb, xq = _problem()
    monkeypatch.setattr(knn_mod, "_run_timed", _no_calibration)
    name, why = select_backend(xb, xq, 10)
    assert name == "torch" and "small problem" in why
    monkeypatch.setattr(knn_mod, "CALIBRATE_MIN_WORK", 0)
    monkeypatch.setattr(knn_mod, "_faiss", lambda: None)
    assert select_backend(xb, xq, 10) == ("torch", "faiss is not installed")


def test_forced_backend_by_argument_and_environment(monkeypatch):
    xb, xq = _problem()
    monkeypatch.setattr(knn_mod, "_run_timed", _no_calibration)
    assert select_backend(xb, xq, 10, backend="faiss")[0] == "faiss-cpu"
    monkeypatch.setenv(knn_mod.ENV_BACKEND, "faiss")
    name, why = select_backend(xb, xq, 10)
    assert name == "faiss-cpu" and knn_mod.ENV_BACKEND in why
    assert knn_search(xb, xq, 5)[2] == "faiss-cpu"
    assert select_backend(xb, xq, 10, backend="torch")[0] == "torch"  # the argument wins over the env
    monkeypatch.setenv(knn_mod.ENV_BACKEND, "annoy")
    with pytest.raises(UserError, match=r"unknown backend 'annoy' \(TRANSFER_KNN_BACKEND\)") as e:
        select_backend(xb, xq, 10)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(knn_mod, "_faiss", lambda: None)
    with pytest.raises(UserError, match="faiss is not installed"):
        select_backend(xb, xq, 10, backend="faiss")


def test_gpu_choice(monkeypatch):
    xb, xq = _problem()
    monkeypatch.setattr(knn_mod, "_run_timed", _no_calibration)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    fake = types.SimpleNamespace(StandardGpuResources=object)
    monkeypatch.setattr(knn_mod, "_faiss", lambda: fake)
    assert select_backend(xb, xq, 10, device="cuda")[0] == "faiss-gpu"
    monkeypatch.setattr(knn_mod, "_faiss", lambda: types.SimpleNamespace())  # faiss-cpu only
    assert select_backend(xb, xq, 10, device="cuda:0")[0] == "torch-cuda"
    assert select_backend(xb, xq, 10, device="cuda", backend="torch")[0] == "torch-cuda"


def test_backends_give_identical_neighbours():
    xb, xq = _problem(n=3000, q=200, d=32, seed=5)
    k = 50
    sf, i_f, bf = knn_search(xb, xq, k, backend="faiss")
    st, i_t, bt = knn_search(xb, xq, k, backend="torch", bank_shard=1000)
    assert (bf, bt) == ("faiss-cpu", "torch")
    # Two BLAS paths round a 32-d float32 dot product differently by at most ~32 eps32 ~ 4e-6, so only
    # neighbours whose exact (float64) similarities lie closer than 1e-5 may swap places ("ties").
    exact = xq.double() @ xb.double().T
    diff = i_f != i_t
    assert diff.float().mean() < 0.01
    for r, c in diff.nonzero().tolist():
        assert abs(float(exact[r, i_f[r, c]] - exact[r, i_t[r, c]])) < 1e-5
    torch.testing.assert_close(sf, st, atol=1e-5, rtol=0)
    y = torch.arange(3000) % 7
    yq = torch.arange(200) % 7
    a = weighted_knn(xb, y, xq, yq, ks=(10, 50), backend="faiss")
    b = weighted_knn(xb, y, xq, yq, ks=(10, 50), backend="torch")
    for kk in (10, 50):
        np.testing.assert_array_equal(a["predictions"][kk], b["predictions"][kk])
    assert (a["backend"], b["backend"]) == ("faiss-cpu", "torch")


def test_report_says_which_backend_ran_and_why():
    xb, xq = _problem()
    res = weighted_knn(xb, torch.arange(400) % 3, xq, torch.arange(60) % 3, ks=(5,), backend="torch")
    assert res["backend_reason"] == "forced by backend argument"
    line = knn_section(res).lines[0]
    assert "backend torch (forced by backend argument)" in line


def test_bench_rows_against_both_floors():
    from probes.bench import bench_probes, format_bench, knn_floor_ratio

    b = bench_probes(n_train=800, n_test=120, dim=16, with_sklearn=False, with_linear=False, knn_reps=2)
    floors = [r for r in b["rows"] if r["task"] == "k-NN floor"]
    ours = b["rows"][0]
    assert {r["impl"] for r in floors} == {"floor: bare faiss IndexFlatIP", "floor: bare torch matmul+topk"}
    assert all(len(r["all_seconds"]) == 2 for r in floors + [ours])  # interleaved rounds
    assert all(r["agree_with_ours"] == 1.0 and r["top1"] == ours["top1"] for r in floors)  # same neighbours
    assert knn_floor_ratio(b) > 0
    text = format_bench(b)
    assert "faster floor" in text and "k-NN backend: torch (small problem" in text
