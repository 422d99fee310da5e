"""Reports: JSON (everything, machine-readable), Markdown and a self-contained HTML page.

Both human reports are rendered from one list of sections (heading, text lines, a table, an
optional inline SVG drawn by matplotlib in :mod:`probes.plots`), so they always show the same numbers;
this module only assembles the pages. Arrays that exist only for plotting or
testing (``predictions``, the embedding) never reach the JSON.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from transfer.checkpoint import atomic_write_text

from . import plots

DROP_KEYS = {"predictions", "embedding"}


@dataclass
class Section:
    heading: str
    lines: List[str] = field(default_factory=list)
    header: Optional[Sequence[str]] = None
    rows: List[Sequence[Any]] = field(default_factory=list)
    svg: str = ""


def to_jsonable(obj: Any) -> Any:
    """Numpy / torch scalars to Python, NaN / inf to None, dict keys to str, drop plot-only keys."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items() if k not in DROP_KEYS}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def _f(v: Any, nd: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _pm(d: Dict[str, Any]) -> str:
    return f"{_f(d.get('mean'))} ± {_f(d.get('ci95'))}"


def knn_section(r: Dict[str, Any]) -> Section:
    s = Section("k-NN (weighted vote)", [f"Protocol: {r['protocol']}; T = {r['T']}; backend {r['backend']}"
                                          f"{' (' + r['backend_reason'] + ')' if r.get('backend_reason') else ''}; "
                                          f"{r['n_train']} train / {r['n_test']} test images."],
                ["k", "k used", "top-1 %", "top-5 %"])
    s.rows = [[k, r["k_effective"][k], _f(r["top1"][k]), _f(r["top5"][k])] for k in r["ks"]]
    s.lines.append(f"Best: k = {r['best_k']}, top-1 {_f(r['best_top1'])} %.")
    s.svg = plots.line_chart({"top-1": [(k, r["top1"][k], 0.0) for k in r["ks"]],
                              "top-5": [(k, r["top5"][k], 0.0) for k in r["ks"]]},
                             "k-NN accuracy vs k", "k", "accuracy (%)", logx=True)
    return s


def linear_section(r: Dict[str, Any]) -> Section:
    if "recipe" in r:  # the standard (augmented) protocol
        lines = [f"Protocol: {r['protocol']}; lr {r['lr']}, batch {r['batch_size']}, {r['epochs']} epochs, "
                 f"{r['steps']} steps."]
        return Section("Linear (standard protocol)", lines, ["top-1 %", "top-5 %"], [[_f(r["top1"]), _f(r["top5"])]])
    lines = [f"Protocol: {r['protocol']}.",
             f"Chosen L2 = {r['best_l2']:.3g} (scikit-learn C = {r['best_C']:.3g} on train+val; "
             f"C = 1 / (L2 x n)), validation top-1 {_f(r['val_top1'])} %; "
             f"{r['n_train']} train / {r['n_val']} val / {r['n_test']} test."]
    if r.get("sweep"):
        lines.append(f"L2 sweep: {len(r['sweep'])} of {len(r.get('l2_values') or r['sweep'])} values run "
                     f"({r['sweep'][0]['l2']:.3g} down to {r['sweep'][-1]['l2']:.3g}); {r.get('sweep_end', '')}. "
                     "Validation top-1 by L2: " + ", ".join(f"{p['l2']:.2g}: {p['val_top1']:.2f}" for p in r["sweep"]) + ".")
    if r.get("ncm_top1") is not None:
        lines.append(f"Nearest-class-mean classifier on the same features: {_f(r['ncm_top1'])} % (sanity floor).")
    s = Section("Linear (fast protocol, cached features)", lines, ["top-1 %", "top-5 %"],
                [[_f(r["top1"]), _f(r["top5"])]])
    if r.get("sweep"):
        s.svg = plots.line_chart({"validation top-1": [(p["l2"], p["val_top1"], 0.0) for p in r["sweep"]]},
                                 "L2 sweep (validation)", "L2 (log2 axis)", "accuracy (%)", logx=True)
    return s


def fewshot_sections(r: Dict[str, Any]) -> List[Section]:
    out: List[Section] = []
    ep = r.get("episodes")
    if ep:
        s = Section(f"Few-shot: {ep['n_way']}-way episodes",
                    [f"Protocol: {ep['protocol']}; {ep['episodes']} episodes, {ep['n_query']} queries per class, "
                     f"seed {ep['seed']}; {ep['n_images']} images ({ep['num_classes']} classes) in the pool."],
                    ["shots"] + [f"{c} %" for c in next(iter(ep["results"].values()), {})])
        s.rows = [[k] + [_pm(v) for v in d.values()] for k, d in ep["results"].items()]
        out.append(s)
    lo = r.get("lowshot")
    if lo and lo["results"]:
        clfs = list(next(iter(lo["results"].values())))
        s = Section("Low-shot curve", [f"Protocol: {lo['protocol']}; seeds {lo['seeds']}."],
                    ["images / class"] + [f"{c} %" for c in clfs])
        s.rows = [[k] + [_pm(d[c]) for c in clfs] for k, d in lo["results"].items()]
        s.svg = plots.line_chart({c: [(k, d[c]["mean"], d[c]["ci95"] or 0.0) for k, d in lo["results"].items()]
                                  for c in clfs}, "accuracy vs labelled images per class",
                                 "images per class (log2 axis)", "accuracy (%)", logx=True)
        out.append(s)
    return out


def finetune_section(r: Dict[str, Any]) -> Section:
    lab, c = r["labels"], r["config"]
    pc = lab["per_class"]
    lines = [f"Protocol: {r['protocol']}.",
             f"Labelled subset ({lab['spec']}, seed {lab['seed']}): {lab['n_labelled']} of {lab['n_train']} train "
             f"images ({100 * lab['fraction']:.3g} %), {min(pc)}-{max(pc)} per class; {lab['selection']}.",
             f"Fine-tuning: {c['epochs']} epochs, batch {c['batch_size']}, lr {c['lr_used']:g} "
             f"({'Nesterov ' if c['nesterov'] else ''}SGD, momentum {c['momentum']}, weight decay {c['weight_decay']}), "
             f"cosine to 0, RandomResizedCrop(scale {c['crop_scale_min']}-1)+flip.",
             (f"Validation: {r['n_val']} {r['val_from']}; nothing is chosen on the test split." if r.get("n_val")
              else "No validation split requested; nothing is chosen on the test split.")]
    s = Section("Semi-supervised fine-tuning", lines,
                ["run", "source", "method", "test top-1 %", "test top-5 %", "val top-1 %", "steps", "seconds"])
    for name, run in r["runs"].items():
        s.rows.append([name, f"`{run['source'].get('spec')}`", run["method"], _f(run.get("top1")),
                       _f(run.get("top5")), _f(run.get("val_top1")), run.get("steps", "-"), _f(run.get("seconds"), 1)])
    return s


def build_sections(report: Dict[str, Any]) -> List[Section]:
    src, ds = report.get("source", {}), report.get("dataset", {})
    head = Section("Setup", [
        f"Checkpoint: `{src.get('spec')}` ({src.get('kind')}), weights sha256 `{str(src.get('weights_sha256'))[:16]}`"
        + (f", method {src['method']}" if src.get("method") else ""),
        f"Data: {ds.get('name')} (train split '{ds.get('train_split')}': {ds.get('n_train')} images, "
        f"test split '{ds.get('test_split')}': {ds.get('n_test')} images, {ds.get('num_classes')} classes)",
        f"Transform: {json.dumps(report.get('transform'))}",
        f"Features: dim {report.get('feature_dim')}; cache {json.dumps(report.get('cache'))}"])
    secs = [head]
    p = report.get("probes", {})
    if "knn" in p:
        secs.append(knn_section(p["knn"]))
    if "linear" in p:
        secs.append(linear_section(p["linear"]))
    if "fewshot" in p:
        secs += fewshot_sections(p["fewshot"])
    if "finetune" in p:
        secs.append(finetune_section(p["finetune"]))
    emb = report.get("embedding")
    if emb is not None:
        secs.append(Section("Test features, 2-D PCA", [f"{len(emb['labels'])} test images, coloured by class."],
                            svg=plots.scatter(emb["xy"], emb["labels"], ds.get("classes"), "PCA of test features")))
    warns = report.get("warnings") or []
    secs.append(Section("Warnings", [f"- {w}" for w in warns] if warns else ["None."]))
    return secs


def to_markdown(title: str, secs: List[Section]) -> str:
    out = [f"# {title}", ""]
    for s in secs:
        out += [f"## {s.heading}", ""] + [ln if ln.startswith("- ") else ln + "  " for ln in s.lines] + [""]
        if s.header:
            out.append("| " + " | ".join(map(str, s.header)) + " |")
            out.append("|" + "---|" * len(s.header))
            out += ["| " + " | ".join(map(str, r)) + " |" for r in s.rows]
            out.append("")
        if s.svg:
            out += ["(plot in the HTML report)", ""]
    return "\n".join(out)


def to_html(title: str, secs: List[Section]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
           "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 9px;"
           "text-align:right}th{background:#f3f3f3}code{background:#f6f6f6}</style></head><body>",
           f"<h1>{e(title)}</h1>"]
    for s in secs:
        out.append(f"<h2>{e(s.heading)}</h2>")
        out += [f"<p>{e(ln)}</p>" for ln in s.lines]
        if s.header:
            out.append("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in s.header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in s.rows]
            out.append("</table>")
        if s.svg:
            out.append(f"<div>{s.svg}</div>")
    out.append("</body></html>")
    return "\n".join(out)


def write_reports(out_dir: Path, stem: str, report: Dict[str, Any]) -> Dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.html`` atomically; returns their paths."""
    out_dir = Path(out_dir)
    title = report.get("title", stem)
    secs = build_sections(report)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md", "html": out_dir / f"{stem}.html"}
    atomic_write_text(paths["json"], json.dumps(to_jsonable(report), indent=2) + "\n")
    atomic_write_text(paths["md"], to_markdown(title, secs) + "\n")
    atomic_write_text(paths["html"], to_html(title, secs) + "\n")
    return paths
