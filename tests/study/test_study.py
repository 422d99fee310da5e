"""``transfer bench methods`` end to end on a tiny budget, its reuse of finished cells, and the
generated reading (issue 8). Runs in well under a minute at one thread; no transfer task runs."""
from __future__ import annotations

import json
import xml.dom.minidom
from pathlib import Path

import pytest

from transfer.cli import main

TINY_MODEL = ["--set", "model.width=0.125", "--set", "model.proj_hidden=64", "--set", "model.proj_dim=32",
              "--set", "model.pred_hidden=16"]


def _argv(out: Path, doc: Path):
    return ["bench", "methods", "--data", "synthetic", "--budget", "tiny", "--methods", "simclr,byol",
            "--forms", "loss,grad", "--seeds", "2", "--steps", "3", "--batch", "32", "--probe-train", "256",
            "--probe-test", "128", "--l2-steps", "2", "--episodes", "20", "--no-transfer", "--threads", "1",
            "--out", str(out), "--doc", str(doc)] + TINY_MODEL


def _last_invocation(out: Path):
    return json.loads((out / "study.json").read_text())["invocations"][-1]


def test_study_end_to_end_then_reuse(tmp_path, monkeypatch, capsys):
    out, doc = tmp_path / "study", tmp_path / "docs" / "benchmarks.md"
    assert main(_argv(out, doc)) == 0
    first = _last_invocation(out)
    assert first["trained"] == 8 and first["cells_reused"] == 0

    # table.json: every (method, variant) present, both seeds, mean and spread of every probe number
    t = json.loads((out / "table.json").read_text())
    rows = {(r["method"], r["variant"]): r for r in t["rows"]}
    assert set(rows) == {(m, v) for m in ("simclr", "byol") for v in ("orig", "grad")}
    for r in rows.values():
        assert r["seeds"] == [0, 1] and not r["failed"]
        for k in ("knn", "linear", "fs1", "fs5"):
            s = r["metrics"][k]
            assert s["n"] == 2 and s["std"] is not None and 0 <= s["mean"] <= 100
    assert rows[("byol", "orig")]["momentum"] is True and rows[("byol", "grad")]["momentum"] is False
    assert {b["method"] for b in t["baselines"]} == {"random init", "raw pixels"}
    assert set(t["spread"]) == {"orig", "grad"} and "range" in t["spread"]["orig"]["linear"]

    # table.md: a header with seeds and the probe columns; each cell row shows mean ± std over 2 seeds
    md = (out / "table.md").read_text()
    header = next(ln for ln in md.splitlines() if ln.startswith("| method |"))
    for col in ("variant", "seeds", "k-NN top-1", "linear top-1", "4-way 1-shot", "4-way 5-shot"):
        assert col in header
    for m in ("simclr", "byol"):
        for label in ("original", "grad, no EMA"):
            line = next(ln for ln in md.splitlines() if ln.startswith(f"| {m} |") and f"| {label} |" in ln)
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[5] == "2" and sum("±" in c for c in cells) >= 4, line
    assert "## Spread between methods" in md

    # the plot and the doc
    xml.dom.minidom.parse(str(out / "plot.svg"))
    xml.dom.minidom.parse(str(doc.with_suffix(".svg")))
    text = doc.read_text()
    assert "transfer bench methods --data synthetic" in text and "## Reading" in text
    assert "paper: grad + EMA" in text and "70.2" in text  # the published table beside ours
    assert "Scale and noise" in text and "Spread between methods" in text

    # a rerun reuses every finished cell: no trainer is built, no cell file rewritten
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/cell.json")}
    assert len(stamps) == 11  # 8 cells + random init x 2 seeds + raw pixels

    def no_trainer(*a, **k):
        raise AssertionError("a finished cell was retrained")

    monkeypatch.setattr("transfer.trainer.Trainer", no_trainer)
    assert main(_argv(out, doc)) == 0
    again = _last_invocation(out)
    assert again["trained"] == 0 and again["probed"] == 0 and again["cells_reused"] == 11
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/cell.json")} == stamps
    assert json.loads((out / "table.json").read_text())["rows"] == t["rows"]

    # interrupted after pretraining, before the probes: only the probes run again
    (out / "cells" / "byol__grad__s1" / "cell.json").unlink()
    assert main(_argv(out, doc)) == 0
    inv = _last_invocation(out)
    assert inv["trained"] == 0 and inv["pretrain_reused"] == 1 and inv["probed"] == 1

    # a changed setting in the same folder is refused instead of mixing budgets
    bad = _argv(out, doc)
    bad[bad.index("--steps") + 1] = "4"
    assert main(bad) == 2
    assert "another setting" in capsys.readouterr().err


def test_plan_cells_variants_and_defaults():
    from transfer.study.cells import parse_variants, plan_cells

    assert parse_variants("loss,grad+ema") == ["orig", "grad_ema"]
    assert parse_variants(None) == ["orig", "grad", "grad_ema"]
    cells = {(c.method, c.variant): c for c in plan_cells(["simclr", "moco", "unigrad"], parse_variants(None), 1)}
    assert len(cells) == 9
    assert cells[("simclr", "orig")].momentum is False and cells[("moco", "orig")].momentum is True
    assert cells[("simclr", "grad_ema")].momentum is True and cells[("simclr", "grad")].momentum is False
    # the default form (transferred): the original loss, except UniGrad's gradient form with EMA
    assert {k for k, c in cells.items() if c.is_default} == {("simclr", "orig"), ("moco", "orig"), ("unigrad", "grad_ema")}


def test_missing_transfer_task_is_skipped_not_failed(monkeypatch, tmp_path):
    from transfer.study import runner

    monkeypatch.setitem(runner.TASK_MODULES, "det", "transfer.tasks.no_such_module")
    r = runner.run_transfer("det", "trees_det", "random:small_resnet18:0.25", tmp_path / "t", 1, "cpu")
    assert r["status"] == "skipped" and "no_such_module" in r["reason"]


def _fake_table(gain: float, dp_minus_byol: float):
    """A table built from invented cell records: the reading must follow the numbers."""
    from transfer.study.cells import StudySpec, plan_cells
    from transfer.study.table import build_table

    methods = ["simclr", "byol", "directpred"]
    spec = StudySpec(data="fashion_mnist", out="x", methods=methods, variants=["orig", "grad", "grad_ema"], seeds=3,
                     steps=100, batch=128, det_task=None, seg_task=None)
    cells = plan_cells(methods, spec.variants, spec.seeds)
    base = {"simclr": 80.0, "byol": 81.0, "directpred": 81.0 + dp_minus_byol}
    results = []
    for c in cells:
        v = base[c.method] + (gain if c.variant == "grad_ema" else 0.0) + 0.1 * (c.seed - 1)
        results.append({"cell": c.cell_id, "status": "ok", "pretrain": {"seconds": 1.0},
                        "probes": {"summary": {"linear_top1": v, "knn_top1_k20": v - 1}}})
    results.append({"cell": "random__s0", "baseline": "random", "seed": 0, "status": "ok",
                    "probes": {"summary": {"linear_top1": 75.0, "knn_top1_k20": 74.0}}})
    study = {"facts": {"n_train": 60000, "n_test": 10000, "classes": 10, "size": 28}, "machine": {}, "invocations": []}
    return build_table(spec, cells, results, study)


@pytest.mark.parametrize("gain,word", [(3.0, "agrees with the paper"), (0.0, "does not show"),
                                       (-3.0, "disagrees with the paper")])
def test_reading_follows_the_numbers(gain, word):
    from transfer.study.doc import reading, write_doc

    text = "\n".join(reading(_fake_table(gain, 0.0)))
    momentum = next(p for p in text.split("\n") if p.startswith("**Momentum encoder**"))
    assert word in momentum
    assert f"{gain:+.2f}" in momentum
    assert "## Reading" in write_doc(_fake_table(gain, 0.0), "b.svg")


def test_reading_directpred_verdict():
    from transfer.study.doc import reading

    on_par = next(p for p in reading(_fake_table(2.0, 0.3)) if p.startswith("**DirectPred"))
    behind = next(p for p in reading(_fake_table(2.0, -4.0)) if p.startswith("**DirectPred"))
    assert "this agrees" in on_par and "does not agree" in behind
