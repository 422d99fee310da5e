"""``transfer bench methods`` end to end on a tiny budget (two methods, two seeds, synthetic data, three
steps per cell; the transfer tasks replaced by a fake detection run and a typed-unavailable
segmentation run), the interval arithmetic against hand computations, reuse of finished phases,
the wall-time cap, and the rule identity computed from the method registry."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from transfer.cli import main
from transfer.errors import TaskUnavailable, UserError

TINY = ["--set", "data.name=synthetic", "--set", "data.size=16", "--set", "optim.batch_size=32",
        "--set", "model.width=0.125", "--set", "model.proj_hidden=64", "--set", "model.proj_dim=32",
        "--set", "model.pred_hidden=16", "--set", "optim.warmup_epochs=0.05"]


def _argv(out: Path, doc: Path, epochs: str = "0.1875"):  # 512 synthetic images / 32 = 16 steps/epoch -> 3 steps
    return ["bench", "methods", "--methods", "simclr,byol", "--seeds", "2", "--epochs", epochs,
            "--transfer-iters", "3", "--out", str(out), "--doc", str(doc)] + TINY


@pytest.fixture
def fake_tasks(monkeypatch):
    calls = []

    def fake(task, ckpt, out_dir, iters, seed, device):
        calls.append((task, ckpt, seed))
        if task == "fmnist_seg":
            raise TaskUnavailable("data for fmnist_seg not found")
        return {"AP": 10.0 + seed + (2.0 if "simclr" in ckpt else 0.0), "AP50": 20.0 + seed}

    monkeypatch.setattr("transfer.study.run.run_transfer_task", fake)
    return calls


def _inv(out: Path):
    return json.loads((out / "study.json").read_text())["invocations"][-1]


def test_study_end_to_end_then_reuse(tmp_path, fake_tasks, monkeypatch, capsys):
    out, doc = tmp_path / "study", tmp_path / "docs" / "benchmarks.md"
    # the wall-time cap: with 0 minutes nothing starts, and the invocation says what remains
    assert main(_argv(out, doc) + ["--max-minutes", "0"]) == 0
    assert _inv(out)["trained"] == 0 and _inv(out)["left"] == 12 + 1 + 2 * (1 + 2 * 2 + 2)  # cells, baselines, transfer
    assert "12 of 12 cells and 27 of 27 phases" in capsys.readouterr().out and _inv(out)["cells_left"] == 12
    assert _inv(out)["finished"] is True  # rewritten after every phase: a killed invocation says finished: false

    assert main(_argv(out, doc)) == 0
    first = _inv(out)
    assert first["trained"] == 12 and first["probed"] == 15 and first["left"] == 0
    # det ran for both methods' default forms (original losses) and random init, per seed; seg skipped
    assert sorted(c for c in fake_tasks if c[0] == "fmnist_det") == sorted([
        ("fmnist_det", str(out / "cells" / f"{m}__orig__s{s}" / "backbone.safetensors"), s)
        for m in ("simclr", "byol") for s in (0, 1)] + [("fmnist_det", f"random:small_resnet18:0.125:{s}", s) for s in (0, 1)])
    assert not list(out.glob("**/transfer/fmnist_seg.json"))  # a typed skip is not recorded

    t = json.loads((out / "table.json").read_text())
    rows = {(r["name"], r["variant"]): r for r in t["rows"]}
    assert set(rows) == {(m, v) for m in ("simclr", "byol") for v in ("orig", "grad", "grad_ema")}
    for r in rows.values():
        assert r["stats"]["knn"]["n"] == 2 and r["stats"]["linear"]["n"] == 2 and not r["failed"]
    assert rows[("byol", "orig")]["stats"]["fmnist_det"] == pytest.approx({"mean": 10.5, "std": math.sqrt(0.5), "n": 2})
    assert rows[("byol", "grad")]["stats"]["fmnist_det"]["n"] == 0  # only default forms transfer

    # the intervals against a hand computation from the stored per-seed numbers (t_{0.975,1} = 12.706)
    def knn(cid):
        return json.loads((out / "cells" / cid / "cell.json").read_text())["knn"]

    d = [knn(f"simclr__grad__s{s}") - knn(f"simclr__orig__s{s}") for s in (0, 1)]
    c = next(c for c in t["claims"] if c["claim"] == "grad vs original" and c["what"].startswith("simclr")
             and c["metric"] == "knn")
    assert c["mean"] == pytest.approx((d[0] + d[1]) / 2)
    half = 12.7062 * abs(d[0] - d[1]) / 2  # t * (|d0 - d1| / sqrt 2) / sqrt 2
    assert c["lo"] == pytest.approx(c["mean"] - half, abs=1e-3) and c["hi"] == pytest.approx(c["mean"] + half, abs=1e-3)
    assert {x["claim"] for x in t["claims"]} == {"grad vs original", "EMA vs no EMA"}
    # an original loss with the momentum encoder (BYOL) is compared with the gradient form with it
    assert any(c["what"] == "byol (grad + EMA) − byol (original)" for c in t["claims"])
    # the momentum encoder per gradient rule, paired by seed
    e = [knn(f"byol__grad_ema__s{s}") - knn(f"byol__grad__s{s}") for s in (0, 1)]
    c = next(c for c in t["claims"] if c["claim"] == "EMA vs no EMA" and c["what"].startswith("byol")
             and c["metric"] == "knn")
    assert c["n"] == 2 and c["mean"] == pytest.approx((e[0] + e[1]) / 2)
    assert c["hi"] - c["lo"] == pytest.approx(12.7062 * abs(e[0] - e[1]), abs=1e-3)

    # transfer against random init, paired by fine-tuning seed: SimCLR's fake AP is random's + 2 on
    # every seed, BYOL's equals it; only default forms appear
    g = {(x["what"], x["task"]): x for x in t["transfer_gains"]}
    assert set(g) == {("simclr (original loss) − random init", "fmnist_det"), ("byol (original loss) − random init", "fmnist_det")}
    assert g[("simclr (original loss) − random init", "fmnist_det")]["mean"] == pytest.approx(2.0)
    assert g[("byol (original loss) − random init", "fmnist_det")]["mean"] == pytest.approx(0.0)
    assert g[("byol (original loss) − random init", "fmnist_det")]["n"] == 2

    # the bar on each row's mean: the rows listed are exactly those whose mean misses it
    b = t["budget_check"]
    assert b["threshold"] == pytest.approx(b["random_knn"] + 10)
    want = sorted(f"{r['name']} ({r['label']}): {r['stats']['knn']['mean']:.2f}" for r in t["rows"]
                  if r["stats"]["knn"]["n"] and r["stats"]["knn"]["mean"] < b["threshold"])
    assert sorted(b["rows_below"]) == want and b["rows_held"] is (not want)

    # the page: budget check stated, intervals and labels, the reading left to a person
    text = doc.read_text()
    assert "transfer bench methods --budget fmnist --epochs 0.1875" in text
    assert "random init + 10 points" in text and ("**held**" in text or "**did not hold**" in text)
    assert "| grad vs original |" in text and "interval" in text and "<!-- reading:start -->" in text
    assert "| simclr (original loss) − random init | fmnist_det | 2 | +2.00 |" in text
    doc.write_text(text.replace("_To be written by a person", "A person wrote this. _To be written by a person"))

    # a rerun reuses every finished phase: no trainer, no probe, no det run; the skipped task is tried again
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("**/cell.json")}
    assert len(stamps) == 15

    def no_trainer(*a, **k):
        raise AssertionError("a finished cell was retrained")

    monkeypatch.setattr("transfer.study.run.Trainer", no_trainer)
    n_det = sum(c[0] == "fmnist_det" for c in fake_tasks)
    assert main(_argv(out, doc)) == 0
    again = _inv(out)
    assert again["trained"] == 0 and again["probed"] == 0 and again["transfer_skipped"] == 6
    assert sum(c[0] == "fmnist_det" for c in fake_tasks) == n_det
    assert {p: p.stat().st_mtime_ns for p in out.glob("**/cell.json")} == stamps
    assert json.loads((out / "table.json").read_text())["claims"] == t["claims"]
    assert "A person wrote this." in doc.read_text()  # the regenerated page keeps the human reading

    # a transfer record is reused only for the export it was made from (a retrained cell's new export
    # is fine-tuned again; the fake task never reads the file)
    f = out / "cells" / "simclr__orig__s0" / "backbone.safetensors"
    f.write_bytes(f.read_bytes() + b" ")
    assert main(_argv(out, doc)) == 0
    det_calls = [c for c in fake_tasks if c[0] == "fmnist_det"]
    assert len(det_calls) == n_det + 1 and det_calls[-1][1] == str(f)

    # a changed setting in the same folder is refused instead of mixing budgets
    assert main(_argv(out, doc, epochs="0.25")) == 2
    assert "another setting" in capsys.readouterr().err

    # ... and so is another precision (bf16 autocast where train.amp resolves so, else float32)
    cell = out / "cells" / "simclr__orig__s0" / "cell.json"
    was = json.loads(cell.read_text())["precision"]
    assert was in ("bf16-autocast", "float32")
    other = "false" if was == "bf16-autocast" else "true"
    assert main(_argv(out, doc) + ["--set", f"train.amp={other}"]) == 2
    assert f"trained in {was}" in capsys.readouterr().err
    assert f"trained in {was} (`train.amp`)" in doc.read_text()  # the page states the precision
    # records from before the key were trained in float32
    for c in out.glob("cells/*/cell.json"):
        c.write_text(json.dumps({k: v for k, v in json.loads(c.read_text()).items() if k != "precision"}))
    assert main(_argv(out, doc) + ["--set", "train.amp=false"]) == 0
    assert _inv(out)["trained"] == 0 and _inv(out)["transfer_ran"] == 6  # the 6 unrecorded seg skips only

    # a probe record the current stop rule would not reproduce (here: a sweep stopped on a strong-end
    # plateau that jittered by one image) is re-probed on the same export, never retrained
    def stale(folder: Path) -> None:
        f = folder / "probes" / "probes.json"
        rep = json.loads(f.read_text())
        rep["probes"]["linear"].update(sweep=[{"l2": 1e5 / 2 ** i, "val_top1": a} for i, a in
                                              enumerate([50.0, 50.0, 50.01, 50.0, 50.0, 50.0, 50.0])], n_val=10000)
        f.write_text(json.dumps(rep))

    cell = out / "cells" / "byol__grad__s1"
    before = json.loads((cell / "cell.json").read_text())
    stale(cell)
    stale(out / "baselines" / "random__s0")
    assert main(_argv(out, doc) + ["--set", "train.amp=false"]) == 0
    inv = _inv(out)
    assert inv["trained"] == 0 and inv["reprobed"] == 1 and inv["probed"] == 1 and inv["transfer_ran"] == 6
    after = json.loads((cell / "cell.json").read_text())
    assert after["knn"] == before["knn"] and after["steps"] == before["steps"]  # same export, same k-NN
    assert after["superseded_probes"]["linear"] == before["linear"]
    from transfer.study.run import probes_current
    assert probes_current(cell) and probes_current(out / "baselines" / "random__s0")


def test_paired_interval_by_hand():
    from transfer.study.stats import mean_std, paired_interval, t_quantile

    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3) and t_quantile(2) == pytest.approx(4.303, abs=1e-3)
    r = paired_interval({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 0.0, 2: 0.0})  # d = 1, 2, 3: sd 1
    assert r["mean"] == 2.0 and r["lo"] == pytest.approx(2 - 2.4843, abs=1e-3) and r["hi"] == pytest.approx(4.4843, abs=1e-3)
    assert r["label"] == "interval includes 0"
    r = paired_interval({0: 81.0, 1: 82.1, 2: 80.9, 3: 99.0}, {0: 80.0, 1: 81.0, 2: 80.0})  # seed 3 unpaired
    assert r["seeds"] == [0, 1, 2] and r["lo"] == pytest.approx(1.0 - 0.2484, abs=1e-3)
    assert r["label"] == "interval excludes 0 (positive)"
    assert paired_interval({0: 1.0, 1: 1.5}, {0: 3.0, 1: 3.4})["label"] == "interval excludes 0 (negative)"
    assert paired_interval({0: 1.0}, {0: 0.0})["lo"] is None
    assert mean_std([1.0, 3.0, None]) == pytest.approx({"mean": 2.0, "std": math.sqrt(2), "n": 2})


def test_budget_check_without_random_init_is_not_checked_yet():
    """No random-init row (e.g. its probe failed): both bars read "not checked yet", none is guessed."""
    from transfer.study.doc import budget_check

    row = {"name": "simclr", "label": "original", "failed": [], "values": {"knn": {0: 50.0}},
           "stats": {"knn": {"mean": 50.0, "std": None, "n": 1}}}
    b = budget_check([row], [])
    assert b["held"] is None and b["rows_held"] is None and b["below"] == [] and b["rows_below"] == []
    b = budget_check([row], [{"name": "random init", "stats": {"knn": {"mean": 45.0}}}])
    assert b["held"] is False and b["rows_below"] == ["simclr (original): 50.00"]


def test_rule_groups_computed_from_the_registry():
    """The grad rows count each rule once; which methods share one is computed, not listed."""
    from transfer.methods import METHODS
    from transfer.study.plan import plan_cells, recipe_params, rule_groups

    names = METHODS.names()
    groups = rule_groups(names, {m: recipe_params(m) for m in names})
    assert ["byol", "directpred", "simsiam"] in groups and ["moco", "simclr"] in groups
    assert ["barlow_twins", "vicreg"] in groups and ["simclr_abs"] in groups and ["unigrad"] in groups
    assert sorted(m for g in groups for m in g) == sorted(m for m in names if "grad" in METHODS.get(m).forms)
    # another parameter value is another rule
    assert ["simclr"] in rule_groups(["moco", "simclr"], {"simclr": {"tau": 0.5}})
    cells = [c for c in plan_cells(names, 1)]
    assert sum(c.variant == "grad" for c in cells) == len(groups)
    assert {c.variant for c in cells if c.method == "directpred"} == {"orig", "pred_linear", "pred_mlp"}
    # the default forms transfer: original losses, UniGrad's gradient form with EMA
    assert {(c.name, c.variant) for c in cells if c.transfer} == \
        {(m, "orig") for m in names if METHODS.get(m).default_form == "loss"} | {("unigrad", "grad_ema")}


def test_missing_task_is_typed_unavailable():
    from transfer.tasks import TASKS

    with pytest.raises(TaskUnavailable):
        TASKS.get("trees_det").require_data("/nonexistent/trees")


def test_one_run_identity_for_trainer_and_study():
    """The study reuses a cell exactly when the trainer would resume it: train.* and optim.max_steps
    do not change what a step computes; anything else does."""
    from transfer.config import load_config
    from transfer.trainer import run_identity

    a = run_identity(load_config("demo_fmnist"))
    assert a == run_identity(load_config("demo_fmnist", ["train.ckpt_every=7", "optim.max_steps=5", "out_dir=x"]))
    assert a != run_identity(load_config("demo_fmnist", ["optim.base_lr=0.1"]))
    assert "seed" in a and not any(k.startswith("train.") for k in a)


def test_identity_leaves_out_unread_params_and_reads_absent_keys_as_defaults():
    """A grad-form run does not depend on the loss form's parameters (tests/methods/test_form_params.py
    checks each declaration); a key a stored run predates stood at its default then."""
    from transfer.config import load_config
    from transfer.trainer import identity_mismatch, run_identity

    grad = ["method.name=vicreg", "method.form=grad", "method.params.grad_lambd=6.0"]
    a = run_identity(load_config("demo_fmnist", grad + ["method.params.loss_scale=0.1", "method.params.sim=5.0"]))
    assert "method.params.loss_scale" not in a and "method.params.sim" not in a and a["method.params.grad_lambd"] == 6.0
    assert a == run_identity(load_config("demo_fmnist", grad))
    loss = run_identity(load_config("demo_fmnist", ["method.name=vicreg", "method.form=loss", "method.params.loss_scale=0.1"]))
    old = {k: v for k, v in loss.items() if k != "method.params.loss_scale"}  # a record from before the key
    assert identity_mismatch(old, loss) == ("method.params.loss_scale", "absent (default 1.0)", 0.1)
    assert identity_mismatch(old, {**loss, "method.params.loss_scale": 1.0}) is None
    assert identity_mismatch(loss, loss) is None
    assert identity_mismatch({**loss, "optim.base_lr": 9.0}, loss) == ("optim.base_lr", "9.0", loss["optim.base_lr"])
    drop = lambda *ks: {k: v for k, v in loss.items() if k not in ks}  # noqa: E731
    assert loss["optim.lars_eta"] == 0.001 and identity_mismatch(drop("optim.lars_eta"), loss) is None  # DEFAULTS
    assert identity_mismatch(drop("optim.lars_eta"), {**loss, "optim.lars_eta": 0.01}) == ("optim.lars_eta", "absent (default 0.001)", 0.01)
    from transfer.data import AugmentConfig  # data.aug.* holds a recipe's overrides of its fields
    assert identity_mismatch(drop("data.aug.scale_min"), loss) == ("data.aug.scale_min", f"absent (default {AugmentConfig().scale_min!r})", 0.4)
    no_default = {**loss, "model.new_knob": 3}
    assert identity_mismatch(loss, no_default) == ("model.new_knob", "absent", 3)


def test_diverged_cell_is_a_result_not_a_failure(tmp_path, monkeypatch):
    """A cell whose loss goes non-finite at the shared setting is recorded as ``diverged`` with its step,
    shown in the table and the bar check, kept out of the means, and not retrained by --retry-failed."""
    out, doc = tmp_path / "study", tmp_path / "bench.md"
    argv = ["bench", "methods", "--methods", "simclr", "--variants", "orig", "--seeds", "1", "--epochs", "0.25",
            "--tasks", "none", "--out", str(out), "--doc", str(doc)] + TINY + ["--set", "optim.base_lr=1e30"]
    assert main(argv) == 0
    rec = json.loads((out / "cells" / "simclr__orig__s0" / "cell.json").read_text())
    assert rec["status"] == "diverged" and isinstance(rec["step"], int) and 0 <= rec["step"] < 4
    assert "non-finite" in rec["reason"] and "knn" not in rec
    row = json.loads((out / "table.json").read_text())["rows"][0]
    assert row["diverged"] == [0] and row["stats"]["knn"]["n"] == 0
    text = doc.read_text()
    assert "| diverged (1) |" in text and f"seed 0: diverged at step {rec['step']}" in text

    def no_trainer(*a, **k):
        raise AssertionError("a diverged cell was retrained")

    monkeypatch.setattr("transfer.study.run.Trainer", no_trainer)
    assert main(argv + ["--retry-failed"]) == 0


def test_tuned_parameters_reach_one_variant_and_are_named_where_it_enters():
    """A budget's per-variant value (``Budget.tuned``) reaches that variant's cells only, changes their
    identity only, and is named in the row's label and in the EMA claim that pairs it with another
    setting; a tuned entry that matches no cell is refused."""
    from transfer.study.doc import _rows, claims
    from transfer.study.plan import BUDGETS, cell_config, plan_cells
    from transfer.trainer import run_identity

    tuned = (("vicreg_exp", "grad", (("grad_lambd", 10.0),)),)
    assert tuned[0] in BUDGETS["fmnist"].tuned  # the shipped budget carries it
    cells = plan_cells(["vicreg_exp"], 2, tuned=tuned)
    by = {(c.variant, c.seed): c for c in cells}
    assert by[("grad", 1)].tuned == (("grad_lambd", 10.0),) and by[("grad_ema", 1)].tuned == () and by[("orig", 0)].tuned == ()
    lam = {v: cell_config("demo_fmnist", 1.0, [], "x", by[(v, 0)])["method"]["params"]["grad_lambd"]
           for v in ("grad", "grad_ema")}
    assert lam == {"grad": 10.0, "grad_ema": 3.0}  # grad + EMA keeps the recipe's value
    plain = plan_cells(["vicreg_exp"], 1)
    ident = lambda cs, v: run_identity(cell_config("demo_fmnist", 1.0, [], "x", next(c for c in cs if c.variant == v)))
    assert ident(cells, "grad") != ident(plain, "grad")
    assert ident(cells, "grad_ema") == ident(plain, "grad_ema") and ident(cells, "orig") == ident(plain, "orig")

    recs = [{"cell": c.cell_id, "status": "ok", "knn": 70.0 + c.seed + (2.0 if c.variant == "grad_ema" else 0.0),
             "linear": 75.0 + c.seed} for c in cells]
    rows = _rows(cells, recs, [], [])
    assert {r["label"] for r in rows} == {"original loss", "grad, no EMA (grad_lambd 10)", "grad + EMA"}
    ema = [c for c in claims(rows) if c["claim"] == "EMA vs no EMA"]
    assert ema and all("settings differ: grad + EMA − grad, no EMA (grad_lambd 10)" in c["what"] for c in ema)
    assert next(c for c in ema if c["metric"] == "knn")["mean"] == pytest.approx(2.0)
    assert all("grad_lambd 10" in c["what"] for c in claims(rows) if c["claim"] == "grad vs original")
    with pytest.raises(UserError, match="match no cell"):
        plan_cells(["barlow_twins", "vicreg"], 1, tuned=(("vicreg", "grad", (("lambd", 1.0),)),))
