"""Aggregate cell results into rows (mean +- std over seeds) and write table.md / table.json."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..checkpoint import atomic_write_text
from .cells import VARIANTS, Cell, StudySpec, fmt_seconds


def stat(values: Sequence[float]) -> Dict[str, Any]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None,
            "n": len(vals), "values": vals}


def metric_specs(spec: StudySpec, n_way: int) -> List[Dict[str, Any]]:
    """(key, column label, path in a cell record) for every reported number."""
    ms = [
        {"key": "knn", "label": "k-NN top-1 (k=20)", "path": ("probes", "summary", "knn_top1_k20")},
        {"key": "linear", "label": "linear top-1", "path": ("probes", "summary", "linear_top1")},
        {"key": "fs1", "label": f"{n_way}-way 1-shot", "path": ("probes", "summary", f"fewshot_{n_way}way_1shot_proto")},
        {"key": "fs5", "label": f"{n_way}-way 5-shot", "path": ("probes", "summary", f"fewshot_{n_way}way_5shot_proto")},
    ]
    if spec.det_task:
        ms += [{"key": "det_ap", "label": f"{spec.det_task} AP", "path": ("transfer", "det", "metrics", "AP"), "transfer": "det"},
               {"key": "det_ap50", "label": f"{spec.det_task} AP50", "path": ("transfer", "det", "metrics", "AP50"),
                "transfer": "det"}]
    if spec.seg_task:
        ms += [{"key": "seg_miou", "label": f"{spec.seg_task} mIoU", "path": ("transfer", "seg", "metrics", "mIoU"),
                "transfer": "seg"}]
    return ms


def _get(rec: Dict[str, Any], path) -> Optional[float]:
    cur: Any = rec
    for k in path:
        cur = cur.get(k) if isinstance(cur, dict) else None
    return float(cur) if isinstance(cur, (int, float)) and not isinstance(cur, bool) else None


def build_table(spec: StudySpec, cells: List[Cell], results: List[Dict[str, Any]], study: Dict[str, Any]) -> Dict[str, Any]:
    facts = study["facts"]
    n_way = min(5, int(facts["classes"]))
    ms = metric_specs(spec, n_way)
    by_cell = {r.get("cell"): r for r in results}
    rows: List[Dict[str, Any]] = []
    setting: Dict[str, Any] = {}
    groups: Dict[tuple, List[Cell]] = {}
    for c in cells:
        groups.setdefault((c.method, c.variant), []).append(c)
    for (method, variant), cs in groups.items():
        c0 = cs[0]
        recs = [(c, by_cell.get(c.cell_id) or {}) for c in cs]
        ok = [(c, r) for c, r in recs if r.get("status") == "ok"]
        row: Dict[str, Any] = {"kind": "cell", "method": method, "family": c0.family, "variant": variant,
                               "label": VARIANTS[variant].label, "form": c0.form, "momentum": c0.momentum,
                               "is_default": c0.is_default, "seeds": [c.seed for c, _ in ok],
                               "failed": [{"seed": c.seed, "reason": r.get("reason", "not run")} for c, r in recs
                                          if r.get("status") != "ok"],
                               "metrics": {}, "notes": {}}
        for m in ms:
            if m.get("transfer") and not c0.is_default:
                continue
            row["metrics"][m["key"]] = stat([_get(r, m["path"]) for _, r in ok])
        row["metrics"]["pretrain_s"] = stat([_get(r, ("pretrain", "seconds")) for _, r in ok])
        row["metrics"]["pos_sim"] = stat([_get(r, ("pretrain", "final", "pos_sim")) for _, r in ok])
        for kind in ("det", "seg"):
            for _, r in recs:
                t = (r.get("transfer") or {}).get(kind)
                if t and t.get("status") in ("skipped", "failed"):
                    row["notes"][kind] = f"{t['status']}: {t.get('reason')}"
        if not setting:
            for _, r in ok:
                setting = (r.get("pretrain") or {}).get("setting") or {}
                break
        rows.append(row)
    base_rows = []
    for name, label in (("random", "random init"), ("pixels", "raw pixels")):
        recs = [r for r in results if r.get("baseline") == name]
        if not recs:
            continue
        ok = [r for r in recs if r.get("status") == "ok"]
        row = {"kind": "baseline", "method": label, "family": "baseline", "variant": "-", "label": "-",
               "form": "-", "momentum": None, "is_default": name == "random", "seeds": [r.get("seed") for r in ok],
               "failed": [{"seed": r.get("seed"), "reason": r.get("reason")} for r in recs if r.get("status") != "ok"],
               "metrics": {}, "notes": {}}
        for m in ms:
            if m.get("transfer") and name != "random":
                continue
            row["metrics"][m["key"]] = stat([_get(r, m["path"]) for r in ok])
        for kind in ("det", "seg"):
            for r in recs:
                t = (r.get("transfer") or {}).get(kind)
                if t and t.get("status") in ("skipped", "failed"):
                    row["notes"][kind] = f"{t['status']}: {t.get('reason')}"
        base_rows.append(row)
    table = {"spec": spec.to_json(), "facts": facts, "machine": study.get("machine", {}),
             "invocations": study.get("invocations", []), "setting": setting,
             "metrics": [{k: v for k, v in m.items() if k != "path"} for m in ms],
             "rows": rows, "baselines": base_rows}
    table["spread"] = spreads(rows, spec.variants)
    table["pivot"] = pivot(rows)
    table["time"] = time_summary(results, study)
    return table


# Gradient forms that are one rule under different names (default parameters, MoCo without a
# queue): UniGrad's ``loss_simclr_grad_mm`` for SimCLR and MoCo, ``loss_byol_directpred_grad`` for
# BYOL, SimSiam and DirectPred (grad_rho/grad_eps = rho/eps), the Barlow rule for VICReg (same
# grad_lambd). In the grad variants they are one method, not several.
SAME_RULE = {"moco": "simclr", "simsiam": "byol", "directpred": "byol", "vicreg": "barlow_twins"}


def rule_key(method: str, variant: str) -> str:
    """The rule a (method, variant) cell trains with; original forms are all distinct."""
    return method if variant == "orig" else SAME_RULE.get(method, method)


def distinct_rules(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per rule (the first of its names), named ``a=b`` when several methods share it."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(rule_key(r["method"], r["variant"]), []).append(r)
    return [{**g[0], "method": "=".join(x["method"] for x in g)} for g in groups.values()]


def method_name(method: str) -> str:
    """``moco`` with ``queue_size = 0`` (every shipped recipe) is MoCo v3's in-batch loss, not MoCo."""
    return "moco (queue 0)" if method == "moco" else method


def spreads(rows: List[Dict[str, Any]], variants: Sequence[str]) -> Dict[str, Any]:
    """Per variant and metric: best and worst method (by mean over seeds), range, typical seed std;
    identical rules (:func:`rule_key`) count once."""
    out: Dict[str, Any] = {}
    for v in variants:
        vr = distinct_rules([r for r in rows if r["variant"] == v])
        out[v] = {}
        for key in ("linear", "knn"):
            pts = [(r["method"], r["metrics"].get(key, {}).get("mean"), r["metrics"].get(key, {}).get("std"))
                   for r in vr]
            pts = [p for p in pts if p[1] is not None]
            if not pts:
                continue
            hi, lo = max(pts, key=lambda p: p[1]), min(pts, key=lambda p: p[1])
            stds = [p[2] for p in pts if p[2] is not None]
            out[v][key] = {"best": [hi[0], hi[1]], "worst": [lo[0], lo[1]], "range": hi[1] - lo[1],
                           "methods": len(pts), "median_seed_std": statistics.median(stds) if stds else None}
    return out


def pivot(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for r in rows:
        out.setdefault(r["method"], {"family": r["family"]})[r["variant"]] = {
            k: r["metrics"].get(k) for k in ("linear", "knn")}
    return out


def time_summary(results: List[Dict[str, Any]], study: Dict[str, Any]) -> Dict[str, Any]:
    pre = [float((r.get("pretrain") or {}).get("seconds") or 0) for r in results if r.get("pretrain")]
    probes = [float((r.get("probes") or {}).get("seconds") or 0) for r in results if r.get("probes")]
    tr = [float(t.get("seconds") or 0) for r in results for t in (r.get("transfer") or {}).values()
          if t.get("status") == "ok"]
    inv = study.get("invocations", [])
    return {"pretrain_s": sum(pre), "probes_s": sum(probes), "transfer_s": sum(tr),
            "compute_s": sum(pre) + sum(probes) + sum(tr), "wall_s": sum(float(i.get("wall_s", 0)) for i in inv),
            "invocations": len(inv)}


# ------------------------------------------------------------------------------ formatting


def fmt(s: Optional[Dict[str, Any]], digits: int = 2) -> str:
    if not s or s.get("mean") is None:
        return "—"
    if s.get("std") is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def main_table_md(table: Dict[str, Any]) -> List[str]:
    ms = table["metrics"]
    head = ["method", "family", "variant", "form", "EMA", "seeds"] + [m["label"] for m in ms] + ["pretrain s/seed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"] + table["baselines"]:
        cells = [method_name(r["method"]), r["family"], r["label"], r["form"],
                 "-" if r["momentum"] is None else ("yes" if r["momentum"] else "no"),
                 str(len(r["seeds"])) + (f" ({len(r['failed'])} failed)" if r["failed"] else "")]
        for m in ms:
            if m.get("transfer") and m["key"] not in r["metrics"]:
                cells.append("")
            elif m.get("transfer") and r["metrics"][m["key"]]["n"] == 0 and m["transfer"] in r["notes"]:
                cells.append(r["notes"][m["transfer"]].split(":")[0])
            else:
                cells.append(fmt(r["metrics"].get(m["key"])))
        ps = r["metrics"].get("pretrain_s")
        cells.append(("" if not ps or ps.get("mean") is None else
                      f"{ps['mean']:.1f}" if ps["mean"] < 10 else f"{ps['mean']:.0f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def spread_md(table: Dict[str, Any]) -> List[str]:
    lines = ["| variant | methods | linear: best | linear: worst | linear range | k-NN range | median seed std (linear) |",
             "|---|---|---|---|---|---|---|"]
    for v, d in table["spread"].items():
        lin, knn = d.get("linear"), d.get("knn")
        if not lin:
            continue
        sd = lin.get("median_seed_std")
        kr = f"{knn['range']:.2f}" if knn else "—"
        lines.append(f"| {VARIANTS[v].label} | {lin['methods']} | {lin['best'][0]} {lin['best'][1]:.2f} | "
                     f"{lin['worst'][0]} {lin['worst'][1]:.2f} | {lin['range']:.2f} | {kr} | "
                     f"{'—' if sd is None else f'{sd:.2f}'} |")
    return lines


def pivot_md(table: Dict[str, Any], key: str = "linear", with_paper: bool = False) -> List[str]:
    from . import paper

    vs = [v for v in ("orig", "grad", "grad_ema") if v in table["spec"]["variants"]]
    head = ["method"] + [VARIANTS[v].label for v in vs]
    if "grad" in vs and "grad_ema" in vs:
        head.append("EMA gain")
    if with_paper:
        head += [f"paper: {VARIANTS[v].label}" for v in ("orig", "grad", "grad_ema")] + ["paper: EMA gain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, d in table["pivot"].items():
        cells = [method_name(m)]
        for v in vs:
            cells.append(fmt((d.get(v) or {}).get(key)) if v in d else "n/a")
        if "grad" in vs and "grad_ema" in vs:
            a, b = ((d.get("grad") or {}).get(key) or {}), ((d.get("grad_ema") or {}).get(key) or {})
            cells.append(f"{b['mean'] - a['mean']:+.2f}" if a.get("mean") is not None and b.get("mean") is not None else "—")
        if with_paper:
            pub = paper.UNIGRAD.get(m) if m != "moco" else None  # the paper's MoCo has a 65,536 queue
            if pub:
                cells += ["—" if x is None else f"{x:.1f}" for x in pub]
                cells.append(f"{pub[2] - pub[1]:+.1f}" if pub[1] is not None and pub[2] is not None else "—")
            elif m in paper.OTHER:
                val, src = paper.OTHER[m]
                cells += [f"{val:.2f}¹", "—", "—", "—"]
            else:
                cells += ["—", "—", "—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def setting_line(table: Dict[str, Any]) -> str:
    s, sp = table.get("setting") or {}, table["spec"]
    imgs = sp["steps"] * sp["batch"]
    n_train = table["facts"]["n_train"]
    bits = [f"{sp['data']}", f"{s.get('arch', '?')} x{s.get('width', '?')} at {s.get('size', '?')} px",
            f"projector {s.get('proj', '?')}", f"{sp['steps']} steps x batch {sp['batch']} = {imgs:,} images per cell "
            f"({imgs / max(1, n_train):.2f} epochs)",
            f"{s.get('optimizer', 'sgd').upper()} lr {s.get('lr', 0):.4g} (base {s.get('base_lr', '?')}), wd {s.get('weight_decay', '?')}",
            f"EMA {s.get('ema', ['?', '?'])[0]} -> {s.get('ema', ['?', '?'])[1]} (cosine)",
            f"{sp['seeds']} seed(s)"]
    return "; ".join(bits)


def probe_line(table: Dict[str, Any]) -> str:
    sp, f = table["spec"], table["facts"]
    ptr = sp["probe_train"] or f["n_train"]
    pte = sp["probe_test"] or f["n_test"]
    n_way = min(5, int(f["classes"]))
    return (f"frozen features; weighted k-NN (k=20, T=0.07, cosine) and L-BFGS logistic regression "
            f"({sp['l2_steps']}-value L2 sweep on a validation split) with {ptr:,} train images (the same subset "
            f"for every row) and {pte:,} test images; {n_way}-way few-shot with prototypes, {sp['episodes']} "
            f"episodes of 15 queries, on the test features")


def transfer_line(table: Dict[str, Any]) -> str:
    sp = table["spec"]
    tasks = [t for t in (sp["det_task"], sp["seg_task"]) if t]
    if not tasks:
        return "transfer tasks: not run (--no-transfer)"
    return (f"transfer: {' and '.join(tasks)} fine-tuned for {sp['transfer_iters']} iterations from each method's "
            f"default form (seeds 0..{sp['transfer_seeds'] - 1}) and from the random-init backbone")


def table_md(table: Dict[str, Any]) -> str:
    sp = table["spec"]
    t = table["time"]
    out = [f"# Method study on {sp['data']}", "",
           f"Setting: {setting_line(table)}.", "", f"Probes: {probe_line(table)}.", "", f"{transfer_line(table)[0].upper()}{transfer_line(table)[1:]}.", "",
           f"Time: pretraining {fmt_seconds(t['pretrain_s'])}, probes {fmt_seconds(t['probes_s'])}, transfer "
           f"{fmt_seconds(t['transfer_s'])} of compute; {fmt_seconds(t['wall_s'])} wall over {t['invocations']} "
           f"invocation(s) ({table['machine'].get('jobs')} job(s) x {table['machine'].get('threads_per_job')} "
           f"thread(s), {table['machine'].get('device')}).", "",
           "## All cells (mean ± std over seeds, %)", ""]
    out += main_table_md(table)
    notes = sorted({f"{r['method']} ({r['label']}): {n}" for r in table["rows"] + table["baselines"] for n in r["notes"].values()})
    fails = [f"{r['method']} ({r['label']}) seed {f['seed']}: {f['reason']}" for r in table["rows"] + table["baselines"]
             for f in r["failed"]]
    if notes or fails:
        out += ["", "Notes:", ""] + [f"- {n}" for n in fails + notes]
    out += ["", "## Spread between methods (per variant)", ""] + spread_md(table)
    out += ["", "## Linear top-1 by method and variant", ""] + pivot_md(table, "linear")
    out += ["", "## k-NN top-1 by method and variant", ""] + pivot_md(table, "knn")
    return "\n".join(out) + "\n"


def write_outputs(table: Dict[str, Any], out: Path, doc: Optional[str] = None) -> Dict[str, Path]:
    from .plot import bar_chart_svg

    out = Path(out)
    paths = {"md": out / "table.md", "json": out / "table.json", "svg": out / "plot.svg"}
    atomic_write_text(paths["md"], table_md(table))
    atomic_write_text(paths["json"], json.dumps(table, indent=1, default=str) + "\n")
    svg = bar_chart_svg(table)
    atomic_write_text(paths["svg"], svg)
    if doc:
        from .doc import write_doc

        dp = Path(doc)
        svg_path = dp.with_suffix(".svg")
        atomic_write_text(svg_path, svg)
        atomic_write_text(dp, write_doc(table, svg_path.name))
        paths["doc"], paths["doc_svg"] = dp, svg_path
    return paths
