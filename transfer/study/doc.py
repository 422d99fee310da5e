"""The study's table (``table.json``) and its page (``docs/benchmarks.md``): the budget and whether
it held, mean ± std per row, each claim's paired 95 % interval with its mechanical label, the
published numbers beside them. No verdict is generated: the reading is written by a person between
the ``reading`` markers, and a regenerated page keeps it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..checkpoint import atomic_write_text
from . import paper
from .plan import VARIANTS, Cell
from .stats import mean_std, paired_interval

METRICS = ("knn", "linear")
READING_START, READING_END = "<!-- reading:start -->", "<!-- reading:end -->"
BUDGET_MARGIN = 10.0  # points of k-NN above random init every cell must reach


def _tuned_label(tuned: Sequence[Tuple[str, Any]]) -> str:
    """`` (grad_lambd 10)``: a variant's own parameter values, shown wherever its row is named."""
    return f" ({', '.join(f'{k} {v:g}' if isinstance(v, float) else f'{k} {v}' for k, v in tuned)})" if tuned else ""


def _rows(cells: Sequence[Cell], recs: List[Dict[str, Any]], transfer: List[Dict[str, Any]], tasks: List[str]):
    """One row per (name, variant): per-seed values and mean ± std."""
    by_id = {r["cell"]: r for r in recs}
    rows: Dict[tuple, Dict[str, Any]] = {}
    for c in cells:
        row = rows.setdefault((c.name, c.variant), {
            "name": c.name, "variant": c.variant, "label": VARIANTS[c.variant] + _tuned_label(c.tuned),
            "tuned": dict(c.tuned), "family": c.family, "form": c.form,
            "momentum": c.momentum, "transfer": c.transfer, "values": {m: {} for m in (*METRICS, *tasks)},
            "failed": [], "diverged": []})
        r = by_id.get(c.cell_id, {})
        if r.get("status") == "ok":
            for m in METRICS:
                if r.get(m) is not None:
                    row["values"][m][c.seed] = float(r[m])
        elif r.get("status") == "failed":
            row["failed"].append(f"seed {c.seed}: {r.get('reason')}")
        elif r.get("status") == "diverged":
            row["diverged"].append(c.seed)
            row["failed"].append(f"seed {c.seed}: diverged at step {r.get('step')} (non-finite loss at the shared setting)")
    for t in transfer:
        for row in rows.values():
            cid = [c.cell_id for c in cells if (c.name, c.variant) == (row["name"], row["variant"])]
            if t["cell"] in cid and t.get("status") == "ok":
                row["values"][t["task"]][t["seed"]] = next(iter(t["metrics"].values()))
    out = list(rows.values())
    for row in out:
        row["stats"] = {m: mean_std([v for v in vals.values()]) for m, vals in row["values"].items()}
    return out


def _baselines(recs: List[Dict[str, Any]], transfer: List[Dict[str, Any]], tasks: List[str]) -> List[Dict[str, Any]]:
    out = []
    for name, label in (("random", "random init"), ("pixels", "raw pixels")):
        rs = [r for r in recs if r["cell"].startswith(name) and r.get("status") == "ok"]
        vals = {m: {r.get("seed") or 0: r[m] for r in rs if r.get(m) is not None} for m in METRICS}
        for t in tasks:
            vals[t] = {x["seed"]: next(iter(x["metrics"].values())) for x in transfer
                       if x["cell"].startswith(name) and x["task"] == t and x.get("status") == "ok"}
        out.append({"name": label, "values": vals, "stats": {m: mean_std(list(v.values())) for m, v in vals.items()}})
    return out


def claims(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Paired differences across seeds for the three claims, on k-NN and linear top-1."""
    by = {(r["name"], r["variant"]): r for r in rows}
    grad_of = {m: r["name"] for r in rows if r["variant"] == "grad" for m in r["name"].split("=")}
    out: List[Dict[str, Any]] = []

    def add(claim: str, what: str, a, b) -> None:
        for m in METRICS:
            out.append({"claim": claim, "what": what, "metric": m, **paired_interval(a[m], b[m])})

    for r in rows:  # 1. the gradient form against the method's original loss, with the same momentum choice
        v = "grad_ema" if r["momentum"] else "grad"  # MoCo / BYOL / DirectPred originals have the EMA encoder
        g = by.get((grad_of.get(r["name"]), v))
        if r["variant"] == "orig" and g is not None:
            add("grad vs original", f"{g['name']} ({g['label']}) − {r['name']} (original)", g["values"], r["values"])
    for r in rows:  # 2. the momentum encoder, per gradient rule (paired by seed; a family's rules each)
        e = by.get((r["name"], "grad_ema"))
        if r["variant"] == "grad" and e is not None:
            differ = "" if e["tuned"] == r["tuned"] else f" (settings differ: {e['label']} − {r['label']})"
            add("EMA vs no EMA", f"{r['name']} ({r['family']}): grad + EMA − grad{differ}", e["values"], r["values"])
    for r in rows:  # 3. DirectPred's analytic predictor against trained ones
        if r["variant"].startswith("pred_") and (r["name"], "orig") in by:
            add("analytic vs trained predictor", f"{r['name']} (analytic) − {r['label']}",
                by[(r["name"], "orig")]["values"], r["values"])
    return out


def transfer_gains(rows: List[Dict[str, Any]], base: List[Dict[str, Any]], tasks: Sequence[str]) -> List[Dict[str, Any]]:
    """Each transferred row's score minus random init's, paired by fine-tuning seed (a cell's seed is
    its fine-tuning seed, and random init's seed-``s`` run fine-tunes with seed ``s`` too)."""
    rnd = next((b["values"] for b in base if b["name"] == "random init"), None)
    if rnd is None:
        return []
    out = [{"what": f"{r['name']} ({r['label']}) − random init", "task": t, **paired_interval(r["values"][t], rnd[t])}
           for r in rows if r["transfer"] for t in tasks if t in rnd]
    return [g for g in out if g["n"]]  # a task skipped here (or not yet run) has no pair


def budget_check(rows: List[Dict[str, Any]], base: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Every cell's k-NN >= random init (mean over seeds) + :data:`BUDGET_MARGIN`."""
    rnd = next((b["stats"]["knn"]["mean"] for b in base if b["name"] == "random init"), None)
    if rnd is None:
        return {"random_knn": None, "threshold": None, "held": None, "below": [], "rows_not_run": 0,
                "rows_held": None, "rows_below": []}
    thr = rnd + BUDGET_MARGIN
    below = [f"{r['name']} ({r['label']}) seed {s}: {v:.2f}" for r in rows for s, v in sorted(r["values"]["knn"].items())
             if v is not None and v < thr]
    below += [f"{r['name']} ({r['label']}) {f}" for r in rows for f in r["failed"]]
    missing = sum(1 for r in rows if r["stats"]["knn"]["n"] + len(r["failed"]) == 0)
    # the same bar on each row's mean over its seeds (what the table reports); a row with a
    # diverged or failed seed misses it
    rows_below = [f"{r['name']} ({r['label']}): {r['stats']['knn']['mean']:.2f}" if r["stats"]["knn"]["n"]
                  else f"{r['name']} ({r['label']}): no finished seed" for r in rows
                  if r["failed"] or (r["stats"]["knn"]["n"] and r["stats"]["knn"]["mean"] < thr)]
    return {"random_knn": rnd, "threshold": thr, "held": False if below else (None if missing else True), "below": below,
            "rows_not_run": missing, "rows_held": False if rows_below else (None if missing else True),
            "rows_below": rows_below}


def build_table(spec, cells: Sequence[Cell], records: Dict[str, Any], cfg: Dict[str, Any],
                run: Dict[str, Any]) -> Dict[str, Any]:
    rows = _rows(cells, records["cells"], records["transfer"], spec.tasks)
    base = _baselines(records["baselines"], records["transfer"], spec.tasks)
    times = {"pretrain_s": sum(float(r.get("pretrain_s") or 0) for r in records["cells"]),
             "probe_s": sum(float(r.get("probe_s") or 0) for r in records["cells"] + records["baselines"]),
             "transfer_s": sum(float(t.get("seconds") or 0) for t in records["transfer"]),
             "wall_s": sum(float(i["wall_s"]) for i in run["invocations"]), "invocations": len(run["invocations"])}
    m, o = cfg["model"], cfg["optim"]
    setting = (f"recipe `{spec.recipe}` with the method swapped: {m['arch']} ×{m['width']} at {cfg['data']['size']} px "
               f"on {cfg['data']['name']}, projector {m['proj_layers']} layers {m['proj_hidden']} → {m['proj_dim']}, "
               f"batch {o['batch_size']}, {o['name'].upper()} lr {o['base_lr']} × batch/256, wd {o['weight_decay']}, "
               f"{spec.epochs:g} epoch(s) per cell, EMA {cfg['ema']['base']} → {cfg['ema']['end']}; method parameters "
               f"from each `<method>_fmnist` recipe; {spec.seeds} seeds")
    tuned = sorted({(c.name, c.variant, c.tuned) for c in cells if c.tuned})
    if tuned:  # Budget.tuned: the one kind of exception to "identical", named in the setting itself
        setting += ("; except, chosen per variant on the validation split (`transfer/study/plan.py`, the budget's "
                    "`tuned`): "
                    + "; ".join(f"{n} ({VARIANTS[v]}){_tuned_label(t)}" for n, v, t in tuned))
    precs = sorted({r.get("precision", "float32") for r in records["cells"] if r.get("status") == "ok"})
    if precs:  # records from before the key were trained in float32
        setting += f"; trained in {' and '.join(precs)} (`train.amp`)"
    return {"command": spec.command, "budget": spec.budget, "setting": setting, "tasks": spec.tasks,
            "transfer_iters": spec.transfer_iters, "cells": len(cells), "rows": rows, "baselines": base,
            "exceptions": len(tuned), "claims": claims(rows), "transfer_gains": transfer_gains(rows, base, spec.tasks),
            "budget_check": budget_check(rows, base), "time": times,
            "left": run["left"], "skipped": run["skipped"],
            "shared_rules": [r["name"] for r in rows if "=" in r["name"] and r["variant"] == "grad"]}


# ------------------------------------------------------------------------------ Markdown
def _ms(s: Dict[str, Any]) -> str:
    if s["mean"] is None:
        return "—"
    return f"{s['mean']:.2f}" + (f" ± {s['std']:.2f}" if s["std"] is not None else "") + f" ({s['n']})"


def _minutes(s: float) -> str:
    return f"{s / 60:.1f} min"


def rows_md(table: Dict[str, Any]) -> List[str]:
    cols = ["k-NN top-1 (k=20)", "linear top-1"] + [f"{t}" for t in table["tasks"]]
    lines = ["| method / rule | variant | family | EMA | " + " | ".join(cols) + " |", "|---" * (4 + len(cols)) + "|"]
    for r in table["rows"]:
        vals = [_ms(r["stats"][m]) for m in METRICS] + [_ms(r["stats"][t]) if r["transfer"] else "" for t in table["tasks"]]
        if r.get("diverged"):  # seeds that diverged are not in the mean: say so in the row itself
            d = f"diverged ({len(r['diverged'])})"
            vals = [d if v == "—" else f"{v}; {d}" for v in vals[:len(METRICS)]] + vals[len(METRICS):]
        lines.append(f"| {r['name']} | {r['label']} | {r['family']} | {'yes' if r['momentum'] else 'no'} | "
                     + " | ".join(vals) + " |")
    for b in table["baselines"]:
        vals = [_ms(b["stats"][m]) for m in METRICS] + [_ms(b["stats"][t]) if t in b["stats"] else "" for t in table["tasks"]]
        lines.append(f"| {b['name']} | — | — | — | " + " | ".join(vals) + " |")
    return lines


def _iv(c: Dict[str, Any]) -> str:
    """``mean | [lo, hi]``: the two table cells of a paired interval."""
    mean = "—" if c["mean"] is None else f"{c['mean']:+.2f}"
    return mean + " | " + ("—" if c["lo"] is None else f"[{c['lo']:+.2f}, {c['hi']:+.2f}]")


def claims_md(table: Dict[str, Any]) -> List[str]:
    lines = ["| claim | difference | probe | seeds | mean | 95 % t interval | label |", "|---|---|---|---|---|---|---|"]
    for c in table["claims"]:
        lines.append(f"| {c['claim']} | {c['what']} | {'k-NN' if c['metric'] == 'knn' else 'linear'} | {c['n']} | "
                     f"{_iv(c)} | {c['label']} |")
    return lines


def gains_md(table: Dict[str, Any]) -> List[str]:
    lines = ["| difference | task | seeds | mean | 95 % t interval | label |", "|---|---|---|---|---|---|"]
    for c in table.get("transfer_gains", []):
        lines.append(f"| {c['what']} | {c['task']} | {c['n']} | {_iv(c)} | {c['label']} |")
    return lines


def render(table: Dict[str, Any], reading: Optional[str] = None) -> str:
    b, t = table["budget_check"], table["time"]
    held = {True: "**held**", False: "**did not hold**", None: "**not checked yet** (no random-init row, or rows not run)"}[b["held"]]
    out = ["# Benchmarks: the fair comparison of siamese SSL methods", "",
           "<!-- generated by `transfer bench methods --doc`; edit the generator (transfer/study/doc.py), "
           "not this file, except the reading between its markers -->", "",
           "## Regenerate", "", "```", table["command"] or "transfer bench methods ...", "```", "",
           "Finished phases are reused: rerunning the command resumes an interrupted study.", "",
           "## Budget", "",
           f"- Setting (identical for every cell{', but for the exceptions it names' if table.get('exceptions') else ''}): "
           f"{table['setting']}.",
           f"- Cells: {table['cells']} (each distinct gradient rule once, without and with the momentum encoder; "
           f"each method's original loss; DirectPred's trained-predictor baselines). Rules shared by several "
           f"methods (same gradient on the same views, computed): {', '.join(table['shared_rules']) or 'none'}.",
           (f"- Transfer: {', '.join(table['tasks'])}, {table['transfer_iters']} fine-tuning iterations, for each "
            "method's default form and random init, fine-tuning seed = pretraining seed." if table["tasks"]
            else "- Transfer: not run (`--tasks none`)."),
           f"- Time: {_minutes(t['wall_s'])} wall over {t['invocations']} invocation(s); pretraining "
           f"{_minutes(t['pretrain_s'])}, probes {_minutes(t['probe_s'])}, transfer {_minutes(t['transfer_s'])}.",
           f"- Check: every cell's k-NN top-1 ≥ random init + {BUDGET_MARGIN:g} points"
           + (f" = {b['random_knn']:.2f} + {BUDGET_MARGIN:g} = {b['threshold']:.2f} %" if b["threshold"] is not None else "")
           + f": {held}.",
           f"- The same bar on each row's mean over its seeds: "
           + {True: "**held**", False: "**did not hold**", None: "**not checked yet**"}[b["rows_held"]] + "."]
    if b["below"]:
        out += ["", "Cells below the bar (or diverged, or failed):", ""] + [f"- {x}" for x in b["below"]]
    if b["rows_below"]:
        out += ["", "Rows whose mean is below the bar (or with a diverged or failed seed):", ""] + [f"- {x}" for x in b["rows_below"]]
    if table["left"] or b.get("rows_not_run"):
        out += ["", f"**Incomplete**: {table['left']} phase(s) not yet run; rerun the command."]
    out += ["", "## Measured (mean ± std over seeds, (n seeds), %; transfer: box AP / mIoU)", ""] + rows_md(table)
    if table["skipped"]:
        out += ["", "Transfer runs skipped (the task unavailable here, or its cell failed):", ""] + [f"- {s}" for s in table["skipped"]]
    out += ["", "## Claims: paired differences across seeds", "",
            "Per seed, A − B on the same seed; mean and 95 % Student-t interval (n − 1 degrees of freedom). "
            "The label says only whether the interval excludes 0.", ""] + claims_md(table)
    if table.get("transfer_gains"):
        out += ["", "## Transfer: pretrained − random init, paired by fine-tuning seed", "",
                "Per seed, the default form's score (box AP / mIoU) minus random init's with the same fine-tuning "
                "seed; mean and 95 % Student-t interval.", ""] + gains_md(table)
    out += ["", "## Published, for reference", "", f"{paper.UNIGRAD_SOURCE}: original / grad, no EMA / grad + EMA.", "",
            "| method | original | grad, no EMA | grad + EMA |", "|---|---|---|---|"]
    out += [f"| {m} | " + " | ".join("—" if x is None else f"{x:.1f}" for x in v) + " |" for m, v in paper.UNIGRAD.items()]
    out += ["", f"{paper.DIRECTPRED_SOURCE}: DirectPred / trained linear / trained 2-layer predictor.", "",
            "| setting | DirectPred | linear | 2-layer |", "|---|---|---|---|"]
    out += [f"| {k} | " + " | ".join(f"{x:.2f}" for x in v) + " |" for k, v in paper.DIRECTPRED.items()]
    out += ["", "## Reading", "", READING_START,
            (reading or "").strip() or "_To be written by a person from the tables and intervals above "
            "(claim by claim: confirmed / refuted / inconclusive at this scale)._", READING_END, ""]
    return "\n".join(out)


def write_doc(table: Dict[str, Any], path: Path) -> None:
    """Write the page, keeping the human-written reading of the page it replaces."""
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    m = re.search(re.escape(READING_START) + r"\n(.*?)" + re.escape(READING_END), old, re.S)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render(table, m.group(1) if m else None))
