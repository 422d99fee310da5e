"""The benchmark helper runs on a tiny problem and our k-NN agrees with the other two."""
from probes.bench import bench_probes, format_bench


def test_bench_small():
    b = bench_probes(n_train=1500, n_test=300, dim=32, l2_steps=3)
    rows = {r["impl"].split(" ")[0]: r for r in b["rows"]}
    knn = [r for r in b["rows"] if r["task"] == "k-NN"]
    assert len(knn) == 3 and len({round(r["top1"], 6) for r in knn}) == 1  # identical top-1
    assert all(r["agree_with_ours"] > 0.99 for r in knn if "agree_with_ours" in r)
    lin = [r for r in b["rows"] if r["task"] == "linear"]
    assert abs(lin[0]["top1"] - lin[1]["top1"]) <= 0.5
    assert all(r["seconds"] >= 0 and r["peak_mb"] >= 0 for r in b["rows"])
    assert rows["probes.knn"]["task"] == "k-NN"
    assert "faster than scikit-learn" in format_bench(b)
