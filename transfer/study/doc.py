"""``docs/benchmarks.md``: the measured table, its command, its budget, the published table beside
it, and a "Reading" whose every sentence is computed from the measured numbers.

Verdicts use the seeds' spread: a difference counts as real when it exceeds twice its standard
error (from the per-cell std over seeds); with one seed there is no noise estimate and the text
says so. Nothing here asserts a conclusion the numbers did not produce.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Dict, List, Optional, Tuple

from . import paper
from .cells import VARIANTS, fmt_seconds
from .table import main_table_md, pivot_md, probe_line, setting_line, spread_md, transfer_line

Stat = Dict[str, Any]


def _m(table: Dict[str, Any], method: str, variant: str, key: str) -> Optional[Stat]:
    s = ((table["pivot"].get(method) or {}).get(variant) or {}).get(key)
    return s if s and s.get("mean") is not None else None


def _se(*stats: Optional[Stat]) -> Optional[float]:
    """Standard error of a sum/difference of independent means; None when a std is unknown."""
    tot = 0.0
    for s in stats:
        if s is None or s.get("std") is None or not s.get("n"):
            return None
        tot += s["std"] ** 2 / s["n"]
    return math.sqrt(tot)


def _diff(a: Optional[Stat], b: Optional[Stat]) -> Optional[Tuple[float, Optional[float]]]:
    """b - a and its standard error."""
    if a is None or b is None:
        return None
    return b["mean"] - a["mean"], _se(a, b)


def _verdict(d: float, se: Optional[float], fallback: float = 0.5) -> str:
    """'up' / 'down' / 'flat' at two standard errors (or +-fallback points without a noise estimate)."""
    thr = 2 * se if se is not None else fallback
    return "up" if d > thr else ("down" if d < -thr else "flat")


def _pm(d: float, se: Optional[float]) -> str:
    return f"{d:+.2f}" + (f" ± {se:.2f}" if se is not None else "")


def noise_level(table: Dict[str, Any], key: str) -> Optional[float]:
    sds = [r["metrics"][key]["std"] for r in table["rows"] if (r["metrics"].get(key) or {}).get("std") is not None]
    return statistics.median(sds) if sds else None


def reading(table: Dict[str, Any]) -> List[str]:
    key = "linear" if any((r["metrics"].get("linear") or {}).get("mean") is not None for r in table["rows"]) else "knn"
    kname = "linear top-1" if key == "linear" else "k-NN top-1"
    sp, f = table["spec"], table["facts"]
    out: List[str] = []
    noise = noise_level(table, key)
    imgs = sp["steps"] * sp["batch"]
    methods = list(table["pivot"])
    # -- scale
    if noise is not None:
        out.append(f"**Scale and noise.** Each cell saw {imgs:,} images ({imgs / max(1, f['n_train']):.2f} epochs of "
                   f"{sp['data']}), against 100 ImageNet epochs of a ResNet-50 in the paper. The median std over seeds "
                   f"of one cell's {kname} is {noise:.2f} points; below, a difference counts only when it exceeds "
                   f"twice its standard error.")
    else:
        out.append(f"**Scale and noise.** Each cell saw {imgs:,} images ({imgs / max(1, f['n_train']):.2f} epochs of "
                   f"{sp['data']}), against 100 ImageNet epochs of a ResNet-50 in the paper. With one seed there is "
                   f"no noise estimate: differences under 0.5 point are read as no difference.")
    # -- baselines
    cells = [(r["method"], r["variant"], r["metrics"].get(key)) for r in table["rows"]]
    cells = [c for c in cells if c[2] and c[2].get("mean") is not None]
    base = {b["method"]: b["metrics"].get(key) for b in table.get("baselines", [])}
    if cells:
        best = max(cells, key=lambda c: c[2]["mean"])
        worst = min(cells, key=lambda c: c[2]["mean"])
        med = statistics.median(c[2]["mean"] for c in cells)
        s = (f"**Against no pretraining.** The best cell, {best[0]} ({VARIANTS[best[1]].label}), reaches "
             f"{best[2]['mean']:.2f} % {kname}; the median cell {med:.2f} %, the worst ({worst[0]}, "
             f"{VARIANTS[worst[1]].label}) {worst[2]['mean']:.2f} %.")
        rnd, pix = base.get("random init"), base.get("raw pixels")
        if rnd and rnd.get("mean") is not None:
            above = sum(1 for c in cells if _verdict(c[2]["mean"] - rnd["mean"], _se(c[2], rnd)) == "up")
            below = sum(1 for c in cells if _verdict(c[2]["mean"] - rnd["mean"], _se(c[2], rnd)) == "down")
            s += (f" The same backbone untrained gives {rnd['mean']:.2f} %: {above} of {len(cells)} cells are clearly "
                  f"above it, {below} clearly below.")
        if pix and pix.get("mean") is not None:
            above_p = sum(1 for c in cells if _verdict(c[2]["mean"] - pix["mean"], _se(c[2])) == "up")
            s += f" Raw pixels give {pix['mean']:.2f} %; {above_p} of {len(cells)} cells clearly beat them."
            if above_p == 0:
                s += " At this budget self-supervised pretraining has not yet caught up with raw pixels."
        out.append(s)
    # -- spread between methods
    sp_ours = table["spread"]
    pm = [m for m in methods if m in paper.UNIGRAD and m != "moco"]  # ours has no queue: not the paper's MoCo
    parts, ranges = [], {}
    for v in ("orig", "grad", "grad_ema"):
        d = (sp_ours.get(v) or {}).get(key)
        if not d or d["methods"] < 2:
            continue
        sub = [(m, _m(table, m, v, key)) for m in pm if m != "unigrad" or v == "grad_ema"]
        sub = [(m, s) for m, s in sub if s is not None]
        ours_p = (max(s["mean"] for _, s in sub) - min(s["mean"] for _, s in sub)) if len(sub) >= 2 else None
        pap = paper.paper_spread(v, [m for m, _ in sub]) if len(sub) >= 2 else None
        ranges[v] = (d["range"], ours_p, pap)
        txt = f"{VARIANTS[v].label}: {d['range']:.2f} points over {d['methods']} methods ({d['worst'][0]} to {d['best'][0]})"
        if ours_p is not None and pap is not None:
            txt += f"; over the paper's {len(sub)} methods {ours_p:.2f} here vs {pap:.1f} in the paper"
        parts.append(txt)
    if parts:
        s = "**Spread between methods.** " + "; ".join(parts) + "."
        if "orig" in ranges and ("grad" in ranges or "grad_ema" in ranges):
            g = min(ranges[v][0] for v in ("grad", "grad_ema") if v in ranges)
            o = ranges["orig"][0]
            if g < o:
                s += (f" As in the paper, the methods are closer together in the gradient form ({g:.2f} vs {o:.2f} "
                      f"points in their original losses)")
            else:
                s += (f" Unlike the paper, the gradient forms do not bring the methods closer together "
                      f"({g:.2f} vs {o:.2f} points in their original losses)")
            if noise is not None and abs(o - g) <= 2 * math.sqrt(2) * noise:
                s += f", though the two ranges differ by less than seed noise (2·√2 × {noise:.2f}): weak evidence either way."
            else:
                s += "."
        if noise is not None and "grad_ema" in ranges:
            r = ranges["grad_ema"][0]
            thr = 2 * math.sqrt(2) * noise
            if r <= thr:
                s += (f" With the momentum encoder the whole range ({r:.2f}) is within seed noise "
                      f"(2·√2 × {noise:.2f} = {thr:.2f}): the paper's \"within ~0.5 point\" holds here in the sense "
                      f"that no method is distinguishable.")
            else:
                s += (f" With the momentum encoder the range ({r:.2f}) exceeds seed noise (2·√2 × {noise:.2f} = "
                      f"{thr:.2f}): unlike the paper's ~0.5 point, the methods do not all reach the same accuracy here.")
        out.append(s)
    # -- momentum encoder, per family
    fams: Dict[str, List[Tuple[str, float, Optional[float]]]] = {}
    for m in methods:
        d = _diff(_m(table, m, "grad", key), _m(table, m, "grad_ema", key))
        if d is not None:
            fams.setdefault(table["pivot"][m]["family"], []).append((m, d[0], d[1]))
    if fams:
        pg = paper.paper_ema_gain(methods)
        bits = []
        all_g, all_se2, have_se = [], [], True
        for fam, lst in fams.items():
            g = statistics.fmean(x[1] for x in lst)
            ses = [x[2] for x in lst]
            se = math.sqrt(sum(s * s for s in ses)) / len(ses) if all(s is not None for s in ses) else None
            pos = sum(1 for x in lst if x[1] > 0)
            vd = _verdict(g, se)
            pf = [pg[x[0]] for x in lst if x[0] in pg]
            ptxt = f"; paper {statistics.fmean(pf):+.1f}" if pf else ""
            word = {"up": "a gain", "down": "a loss", "flat": "no clear change"}[vd]
            bits.append(f"{fam} {_pm(g, se)} ({pos}/{len(lst)} methods up; {word}{ptxt})")
            all_g += [x[1] for x in lst]
            if se is None:
                have_se = False
            all_se2 += [(x[2] or 0) ** 2 for x in lst]
        g_all = statistics.fmean(all_g)
        se_all = math.sqrt(sum(all_se2)) / len(all_g) if have_se else None
        vd = _verdict(g_all, se_all)
        pall = statistics.fmean(pg.values()) if pg else None
        s = (f"**Momentum encoder** (grad + EMA minus grad, {kname}, by family): " + "; ".join(bits) +
             f". Over all {len(all_g)} methods: {_pm(g_all, se_all)}")
        if pall is not None:
            s += f" (paper: {pall:+.1f} over its {len(pg)} methods)"
        s += ". " + {"up": "This agrees with the paper: the momentum encoder lifts the methods.",
                     "down": "This disagrees with the paper: here the momentum encoder lowers accuracy.",
                     "flat": "The paper's gain does not show at this budget: the difference is within noise."}[vd]
        if vd == "up" and any(_verdict(x[1], x[2]) == "down" for lst in fams.values() for x in lst):
            s += " Not every method follows: " + ", ".join(
                x[0] for lst in fams.values() for x in lst if _verdict(x[1], x[2]) == "down") + " lose with it."
        out.append(s)
    # -- gradient form vs original
    gv = []
    for m in methods:
        d = _diff(_m(table, m, "orig", key), _m(table, m, "grad", key))
        if d is not None and m != "unigrad":
            gv.append((m, d[0], d[1]))
    if gv:
        pgo = paper.paper_grad_vs_orig([m for m, _, _ in gv])
        vd = {m: _verdict(d, se) for m, d, se in gv}
        s = ("**Gradient form (no EMA) vs original loss**: " +
             ", ".join(f"{m} {_pm(d, se)}" + (f" (paper {pgo[m]:+.1f})" if m in pgo else "") for m, d, se in gv) + ".")
        up = [m for m in vd if vd[m] == "up"]
        down = [m for m in vd if vd[m] == "down"]
        s += (f" Beyond noise: {len(up)} up{' (' + ', '.join(up) + ')' if up else ''}, {len(down)} down"
              f"{' (' + ', '.join(down) + ')' if down else ''}, {len(gv) - len(up) - len(down)} unchanged.")
        if pgo:
            close = [m for m, v in pgo.items() if abs(v) <= 1.1]
            big = [f"{m} {v:+.1f}" for m, v in pgo.items() if abs(v) > 1.1]
            s += (f" The paper has the gradient form within 1.1 points of the original for {len(close)} of {len(pgo)} "
                  f"of these methods" + (f" and clearly better for {', '.join(big)}" if big else "") +
                  ": it stands in for the loss.")
            same = [m for m in pgo if (vd[m] == "up" and pgo[m] > 1.1) or (vd[m] == "flat" and abs(pgo[m]) <= 1.1)]
            s += f" Our verdict matches the paper's for {len(same)} of {len(pgo)}."
        s += (" Here too the gradient form stands in for the loss: it is never clearly worse." if not down else
              f" Unlike the paper, the gradient form is clearly worse for {', '.join(down)} at this budget.")
        s += (" (MoCo, BYOL and DirectPred use the momentum encoder in their original form but not in this column, "
              "as in the paper's table.)")
        out.append(s)
    # -- DirectPred vs a trained predictor
    dp = _m(table, "directpred", "orig", key)
    if dp is not None:
        comps = []
        for other, why in (("byol", "trained 2-layer predictor, momentum encoder"),
                           ("simsiam", "trained 2-layer predictor, no momentum encoder")):
            d = _diff(_m(table, other, "orig", key), dp)
            if d is not None:
                comps.append((other, why, d))
        if comps:
            ref = "; ".join(f"{k}: DirectPred {a:.1f} vs trained linear {b:.1f} vs 2-layer {c:.1f}"
                            for k, (a, b, c) in paper.DIRECTPRED.items())
            s = "**DirectPred (predictor set from statistics) vs a trained predictor** (original forms): "
            s += "; ".join(f"DirectPred minus {o} ({why}) {_pm(d, se)}" for o, why, (d, se) in comps) + "."
            s += f" Published: {ref} — DirectPred matches a trained 2-layer predictor within ~1 point."
            d, se = comps[0][2]
            if d >= -max(1.0, 2 * se if se is not None else 0.0):
                s += (f" Here too DirectPred is on par with or better than {comps[0][0]} ({d:+.2f}): this agrees.")
            else:
                s += (f" Here DirectPred trails {comps[0][0]} by {-d:.2f} points, more than ~1 point and noise: "
                      f"this does not agree at this budget.")
            out.append(s)
    # -- UniGrad's loss form vs its gradient form
    d = _diff(_m(table, "unigrad", "grad_ema", key), _m(table, "unigrad", "orig", key))
    if d is not None:
        vd = _verdict(d[0], d[1])
        out.append(f"**UniGrad, loss form vs gradient form** (same gradient by construction, both with EMA): "
                   f"{_pm(*d)} points — " + ("consistent with the equivalence (within noise)." if vd == "flat" else
                                              "larger than noise: the two implementations diverge at this budget "
                                              "(look for numerical differences or lr sensitivity)."))
    # -- transfer
    for mk, label in (("det_ap50", f"{sp['det_task']} box AP50"), ("seg_miou", f"{sp['seg_task']} mIoU")):
        vals = [(r["method"], r["metrics"].get(mk)) for r in table["rows"] if r["is_default"]]
        vals = [(m, s) for m, s in vals if s and s.get("mean") is not None]
        if not vals:
            continue
        hi, lo = max(vals, key=lambda x: x[1]["mean"]), min(vals, key=lambda x: x[1]["mean"])
        rnd = next((b["metrics"].get(mk) for b in table.get("baselines", []) if b["method"] == "random init"), None)
        s = (f"**{label}** after {sp['transfer_iters']} fine-tuning iterations (default forms): {lo[1]['mean']:.2f} "
             f"({lo[0]}) to {hi[1]['mean']:.2f} ({hi[0]})")
        if rnd and rnd.get("mean") is not None:
            above = sum(1 for _, st in vals if st["mean"] > rnd["mean"])
            s += f"; random init {rnd['mean']:.2f}, beaten by {above} of {len(vals)} methods"
        s += (". The paper reports no transfer at this scale; schedules this short measure how quickly a backbone "
              "adapts more than how good it is.")
        out.append(s)
    return out


def write_doc(table: Dict[str, Any], svg_name: str) -> str:
    sp, t, mach = table["spec"], table["time"], table["machine"]
    n_cells = sum(len(r["seeds"]) + len(r["failed"]) for r in table["rows"])
    lines = [
        "# Benchmarks: the fair comparison of siamese SSL methods",
        "",
        "<!-- generated by `transfer bench methods --doc`; edit the generator (transfer/study/doc.py), not this file -->",
        "",
        "Every registered method pretrained under one identical setting, in its original loss, its gradient form "
        "without the momentum encoder and its gradient form with it (UniGrad's study, `shared/docs/seeds.md` §1, "
        "rerun at CPU scale), then probed on frozen features; each method's default form is also fine-tuned on a "
        "detection and a segmentation task.",
        "",
        "## Regenerate",
        "",
        "```",
        sp.get("command") or "transfer bench methods ...",
        "```",
        "",
        "Finished cells are reused: rerunning the command after an interruption resumes where it stopped; "
        "`--jobs N` runs cells in N processes (one GPU each where several are present).",
        "",
        "## Budget",
        "",
        f"- Setting (identical for every cell): {setting_line(table)}.",
        f"- Cells: {n_cells} = {len(table['pivot'])} methods × up to {len(sp['variants'])} variants × {sp['seeds']} "
        f"seed(s); budget preset `{sp['budget']}`.",
        f"- Probes: {probe_line(table)}.",
        f"- {transfer_line(table)[0].upper()}{transfer_line(table)[1:]}.",
        f"- Time: {fmt_seconds(t['wall_s'])} wall ({t['invocations']} invocation(s)); compute: pretraining "
        f"{fmt_seconds(t['pretrain_s'])}, probes {fmt_seconds(t['probes_s'])}, transfer {fmt_seconds(t['transfer_s'])}.",
        f"- Machine: {mach.get('cores')} cores, {mach.get('jobs')} job(s) × {mach.get('threads_per_job')} thread(s), "
        f"{mach.get('device_name') or mach.get('device')}, torch {mach.get('torch', '?')}, {mach.get('platform', '')}.",
        "",
        "## Measured (mean ± std over seeds, %)",
        "",
    ]
    lines += main_table_md(table)
    fails = [f"{r['method']} ({r['label']}) seed {f_['seed']}: {f_['reason']}" for r in table["rows"] + table["baselines"]
             for f_ in r["failed"]]
    notes = sorted({f"{r['method']}: {n}" for r in table["rows"] + table["baselines"] for n in r["notes"].values()})
    if fails or notes:
        lines += ["", "Failed or skipped:", ""] + [f"- {x}" for x in fails + notes]
    lines += ["", f"![linear and k-NN top-1 per method and variant]({svg_name})", "",
              "## Beside the published ImageNet table", "",
              f"Linear top-1: ours ({sp['data']}, this budget) and the paper's ({paper.UNIGRAD_SOURCE}). The absolute "
              "numbers are not comparable (dataset, network, budget); the comparison is of the pattern: gaps between "
              "methods within a column, and the gain from the momentum encoder.", ""]
    lines += pivot_md(table, "linear", with_paper=True)
    others = [f"{m}: {v} — {src}" for m, (v, src) in paper.OTHER.items() if m in table["pivot"]]
    if others:
        lines += ["", "¹ Original-loss numbers from elsewhere (not UniGrad's setting): " + "; ".join(others) + "."]
    lines += ["", "k-NN top-1:", ""] + pivot_md(table, "knn")
    lines += ["", "## Spread between methods", ""] + spread_md(table)
    lines += ["", "## Reading", "",
              "Generated from the numbers above by `transfer/study/doc.py`; rerunning the study rewrites it.", ""]
    lines += [f"- {p}" for p in reading(table)]
    return "\n".join(lines) + "\n"
