"""Gather the results already computed for a run, and turn them into table rows.

Where a run's results are looked for (the convention; document your own outputs to match):

- probes: ``transfer probe ... --ckpt RUN_DIR --out RUN_DIR/probes`` writes ``RUN_DIR/probes/*.json``
  (``knn.json``, ``linear.json``, ``fewshot.json``, or ``report.json`` from ``probe all``);
  any JSON below the run folder with ``probes``, ``source`` and ``summary`` keys counts.
- transfer tasks: ``transfer run TASK --ckpt RUN_DIR --out RUN_DIR/transfer/TASK`` writes
  ``RUN_DIR/transfer/TASK/results.json``; also accepted: ``RUN_DIR/*/results.json``.
  Keys read (all optional): ``task``, ``engine``, ``protocol`` (else built from task, engine and
  ``schedule.max_iter``), ``dataset`` (or ``data``), ``split``, ``metrics`` (a dict of numbers,
  possibly nested one level; every number in it is a metric); without ``metrics``, the known metric
  keys at the top level or under ``bbox`` / ``segm`` (``AP``, ``AP50``, ``APs``, ``voc07_AP50``,
  ``mIoU``, ``aAcc``, ``mAcc``, ``top1``, ...); and ``weights_sha256`` (top level or under
  ``ckpt`` / ``backbone`` / ``source``, as ``FeatureSource.describe()`` writes it).

A result that names weights other than the published ones (a different ``weights_sha256``) is
left out, with a warning: a number is only published next to the weights that produced it.
A transfer result that names no weights is kept and marked ``provenance: unverified``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

# without a "metrics" dict, these keys (top level, or inside "bbox" / "segm") are the metrics; per-class
# tables, settings, schedules and timings are not
_METRIC_KEY = re.compile(r"^(m?AP(\d+|s|m|l)?|AR(\d+|s|m|l)?|voc07_AP50|m?IoU|aAcc|mAcc|top[15]|PQ|m?Dice|F1)$")
_GROUPS = ("bbox", "segm", "metrics")


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _sha_of(d: Dict[str, Any]) -> Optional[str]:
    for holder in (d, d.get("backbone"), d.get("source"), d.get("ckpt"), d.get("checkpoint")):
        if isinstance(holder, dict) and isinstance(holder.get("weights_sha256"), str):
            return holder["weights_sha256"]
    return None


def _row(protocol: str, dataset: str, split: str, metric: str, value: float, source: str, **extra: Any) -> Dict[str, Any]:
    r = {"protocol": protocol, "dataset": dataset, "split": split, "metric": metric,
         "value": round(float(value), 4), "source": source}
    r.update({k: v for k, v in extra.items() if v is not None})
    return r


def probe_rows(rep: Dict[str, Any], source: str) -> List[Dict[str, Any]]:
    ds = rep.get("dataset") or {}
    dname, split = str(ds.get("name") or ds.get("spec") or "?"), str(ds.get("test_split") or "test")
    p, rows = rep.get("probes") or {}, []
    knn = p.get("knn")
    if isinstance(knn, dict) and _num(knn.get("best_top1")) is not None:
        rows.append(_row(f"k-NN (weighted, DINO), T={knn.get('T')}, best k={knn.get('best_k')}", dname, split,
                         "top-1 %", knn["best_top1"], source, kind="probe", probe="knn"))
        k20 = (knn.get("top1") or {}).get("20")
        if _num(k20) is not None and str(knn.get("best_k")) != "20":
            rows.append(_row(f"k-NN (weighted, DINO), T={knn.get('T')}, k=20", dname, split, "top-1 %", k20,
                             source, kind="probe", probe="knn"))
    lin = p.get("linear")
    if isinstance(lin, dict) and _num(lin.get("top1")) is not None:
        proto = (f"linear ({lin['recipe']} protocol, {lin.get('epochs')} epochs, frozen backbone)" if "recipe" in lin
                 else "linear (fast: L-BFGS logistic regression on frozen features, L2 sweep)")
        rows.append(_row(proto, dname, split, "top-1 %", lin["top1"], source, kind="probe", probe="linear"))
    few = p.get("fewshot")
    ep = few.get("episodes") if isinstance(few, dict) else None
    if isinstance(ep, dict):
        for shots, per_clf in (ep.get("results") or {}).items():
            for clf, v in (per_clf or {}).items():
                if isinstance(v, dict) and _num(v.get("mean")) is not None:
                    rows.append(_row(f"few-shot {ep.get('n_way')}-way {shots}-shot ({clf}), {ep.get('episodes')} episodes",
                                     dname, str(ep.get("pool_split") or split), "accuracy %", v["mean"], source,
                                     kind="probe", probe="fewshot", ci95=_num(v.get("ci95"))))
    return rows


def _metric_items(d: Dict[str, Any], everything: bool) -> List[Tuple[str, float]]:
    """``(name, value)`` of the metrics in ``d``: every number (``everything``) or those whose key is a
    known metric name, each one level into the known groups (``bbox``, ``segm``, ``metrics``)."""
    out: List[Tuple[str, float]] = []
    for k, v in d.items():
        if isinstance(v, dict) and (everything or k in _GROUPS):
            out += [(f"{k} {k2}", float(v2)) for k2, v2 in v.items()
                    if _num(v2) is not None and (everything or _METRIC_KEY.fullmatch(str(k2)))]
        elif _num(v) is not None and (everything or _METRIC_KEY.fullmatch(str(k))):
            out.append((str(k), float(v)))
    return out


def transfer_rows(res: Dict[str, Any], source: str, task_guess: str, verified: bool) -> List[Dict[str, Any]]:
    task = str(res.get("task") or task_guess)
    engine = res.get("engine")
    sched = res.get("schedule") if isinstance(res.get("schedule"), dict) else res.get("settings")
    iters = sched.get("max_iter") if isinstance(sched, dict) else None
    proto = str(res.get("protocol") or f"{task}: fine-tune" + (f", {engine} engine" if engine else "")
                + (f", {iters} iterations" if iters else ""))
    ds = res.get("dataset", res.get("data"))
    if isinstance(ds, dict):
        dname = str(ds.get("name") or task)
    elif isinstance(ds, str) and ds:
        dname = Path(ds).name if ("/" in ds or "\\" in ds) else ds
    else:
        dname = task
    split = str(res.get("split") or ("test" if isinstance(ds, dict) and "test" in ds else "val"))
    metrics = res["metrics"] if isinstance(res.get("metrics"), dict) else res
    rows = [_row(proto, dname, split, name, v, source, kind="transfer", task=task)
            for name, v in _metric_items(metrics, everything=metrics is not res)]
    if not verified:
        for r in rows:
            r["provenance"] = "unverified (no weights_sha256 in the result)"
    return rows


def _load_json(p: Path) -> Optional[Dict[str, Any]]:
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def gather(run_dir: Path, weights_sha256: Optional[str]) -> Tuple[Dict[str, Any], List[Dict[str, Any]], List[str]]:
    """``(results document, table rows, warnings)`` for everything found under ``run_dir``."""
    run_dir = Path(run_dir)
    doc: Dict[str, Any] = {"probes": {}, "transfer": {}}
    rows: List[Dict[str, Any]] = []
    warnings: List[str] = []
    candidates = sorted({p for pat in ("*/*.json", "*/*/*.json", "*/*/*/*.json") for p in run_dir.glob(pat)},
                        key=lambda p: (p.stat().st_mtime, str(p)))
    for p in candidates:
        rel = p.relative_to(run_dir).as_posix()
        if any(part.startswith(".") for part in p.relative_to(run_dir).parts):
            continue
        data = _load_json(p)
        if data is None:
            if p.name == "results.json":
                warnings.append(f"{rel}: unreadable JSON, skipped")
            continue
        is_probe = isinstance(data.get("probes"), dict) and isinstance(data.get("source"), dict) and "summary" in data
        is_task = p.name == "results.json" and not is_probe
        if not (is_probe or is_task):
            continue
        sha = _sha_of(data)
        if sha and weights_sha256 and sha != weights_sha256:
            warnings.append(f"{rel}: results for other weights (sha256 {sha[:12]}... != {weights_sha256[:12]}...), skipped")
            continue
        if is_probe:
            doc["probes"][rel] = data
            rows += probe_rows(data, rel)
        else:
            task_guess = p.parent.name
            doc["transfer"][rel] = data
            rows += transfer_rows(data, rel, task_guess, verified=bool(sha))
            if not sha:
                warnings.append(f"{rel}: names no weights_sha256; published as unverified")
    # the same (protocol, dataset, split, metric) from several files: the newest file wins
    latest: Dict[Tuple[str, str, str, str], Dict[str, Any]] = {}
    for r in rows:
        latest[(r["protocol"], r["dataset"], r["split"], r["metric"])] = r
    return doc, list(latest.values()), warnings
