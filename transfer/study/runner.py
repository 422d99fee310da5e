"""Run the study: cells (pretrain -> probes -> transfer) in parallel processes, resumable.

Each phase of a cell writes its result atomically under ``OUT/cells/<method>__<variant>__s<seed>/``:
``pretrain.json`` (after the trainer finished; the trainer itself resumes mid-run from
``checkpoint.pt``), ``cell.json`` (pretraining + probe numbers: the finished cell), and
``transfer/<task>.json`` per transfer task. A rerun reads what exists and runs only what is missing,
so an interrupted study resumes, and a study first run with ``--no-transfer`` gains its transfer
columns by running again with them. A failed phase is recorded (``status: failed`` and the reason)
and not retried unless ``--retry-failed``; a skipped transfer task (module, engine or data absent)
is not recorded, so it runs once the task is available.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..checkpoint import atomic_write_text
from ..errors import UserError
from .cells import Cell, StudySpec, cell_config, plan_cells, setting_summary

# --------------------------------------------------------------------------- small helpers


def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # absent or torn by a crash outside atomic_write: redo the phase


def _write_json(path: Path, obj: Dict[str, Any]) -> None:
    atomic_write_text(Path(path), json.dumps(obj, indent=1, default=str, allow_nan=False) + "\n")


def _reusable(rec: Optional[Dict[str, Any]], retry_failed: bool) -> bool:
    return rec is not None and (rec.get("status") == "ok" or (rec.get("status") == "failed" and not retry_failed))


def _reason(e: BaseException) -> str:
    if isinstance(e, UserError):
        return str(e).splitlines()[0][:300]
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:240] if str(e) else ''}{where}"


def _clean_num(x: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(x, float):
        return x if x == x and abs(x) != float("inf") else None
    if isinstance(x, dict):
        return {k: _clean_num(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean_num(v) for v in x]
    return x


# --------------------------------------------------------------------------- dataset facts


def dataset_facts(data: str) -> Dict[str, Any]:
    from ..data import build_dataset

    tr = build_dataset(data, "train")
    try:
        te = build_dataset(data, "test")
        n_test = len(te)
    except UserError:
        n_test = 0
    images = getattr(tr, "images", None)
    size = int(images.shape[-1]) if images is not None else int(getattr(tr, "load_size", 224))
    return {"n_train": len(tr), "n_test": n_test, "size": size, "classes": len(tr.classes)}


# --------------------------------------------------------------------------- probes


def probe_config(spec: StudySpec, size: int, num_classes: int, device: str):
    from probes.run import ProbeConfig

    return ProbeConfig(size=size, device=device, use_cache=False, seed=0, ks=(10, 20, 100, 200), l2_steps=spec.l2_steps,
                       n_way=min(5, num_classes), shots=(1, 5), episodes=spec.episodes, lowshot_shots=(),
                       embedding_points=500)


def _subset(ds, n: int, seed: int):
    """The first ``n`` of a fixed permutation (the same images for every cell); in-memory sets only."""
    import copy

    import torch

    if not n or n >= len(ds) or getattr(ds, "images", None) is None:
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    sub = copy.copy(ds)
    sub.images, sub.labels = ds.images[idx].contiguous(), ds.labels[idx].contiguous()
    return sub


def run_probe_set(ckpt: str, spec: StudySpec, out_dir: Path, size: int, num_classes: int, device: str) -> Dict[str, Any]:
    """k-NN, linear and few-shot on one checkpoint, as ``probes.run.run_probes`` does, except that
    the train/test splits may be subsampled (``--probe-train``/``--probe-test``) to fit a budget."""
    import torch

    from probes.features import cached_features, make_transform
    from probes.run import RUNNERS, Context, summarize
    from probes.source import load_source

    from ..data import build_dataset

    cfg = probe_config(spec, size, num_classes, device)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    source = load_source(ckpt)
    train_ds = _subset(build_dataset(spec.data, "train"), spec.probe_train, 1)
    test_ds = _subset(build_dataset(spec.data, "test"), spec.probe_test, 2)
    mean, std = train_ds.mean, train_ds.std
    if source.kind == "backbone" and source.meta.get("mean") and source.meta.get("std"):
        mean, std = source.meta["mean"], source.meta["std"]
    transform = make_transform(size, mean, std, pixels=source.kind == "pixels")
    ctx = Context(source, train_ds, test_ds, transform)
    for split, ds in (("train", train_ds), ("test", test_ds)):
        f, y, info = cached_features(source, ds, split, transform, use_cache=False, batch_size=cfg.batch_size,
                                     device=device)
        ctx.feats[split], ctx.cache[split] = (f, y), info["cache"]
    report: Dict[str, Any] = {"title": f"Probes: {ckpt} on {spec.data}", "source": source.describe(),
                              "dataset": {"name": spec.data, "n_train": len(train_ds), "n_test": len(test_ds),
                                          "num_classes": num_classes},
                              "transform": transform, "feature_dim": int(ctx.feats["train"][0].shape[1]),
                              "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
                              "probes": {}, "timings_s": {"features": round(time.time() - t0, 3)}, "warnings": []}
    for n in ("knn", "linear", "fewshot"):
        t = time.time()
        res = RUNNERS[n](ctx, cfg)
        report["probes"][n] = res
        report["timings_s"][n] = round(time.time() - t, 3)
        report["warnings"] += [f"{n}: {w}" for w in res.get("warnings", [])]
    report["summary"] = summarize(report)
    try:  # the probes' own per-checkpoint report, for a closer look at one cell
        from probes.plots import pca_2d
        from probes.report import write_reports

        xte, yte = ctx.feats["test"]
        xy, idx = pca_2d(xte, cfg.embedding_points, cfg.seed)
        report["embedding"] = {"xy": xy, "labels": yte[torch.as_tensor(idx)].numpy()}
        write_reports(out_dir, "probes", report)
    except Exception as e:  # a report is a convenience; the numbers are in cell.json
        report["warnings"].append(f"probe report not written: {_reason(e)}")
    return {"summary": _clean_num(report["summary"]), "timings_s": report["timings_s"],
            "n_train": len(train_ds), "n_test": len(test_ds), "feature_dim": report["feature_dim"],
            "warnings": report["warnings"][:20], "seconds": round(time.time() - t0, 2)}


# --------------------------------------------------------------------------- transfer


TASK_MODULES = {"det": "transfer.tasks.detection", "seg": "transfer.tasks.segmentation"}


def _metrics(kind: str, res: Dict[str, Any]) -> Dict[str, Optional[float]]:
    def pick(*paths):
        for p in paths:
            cur: Any = res
            for k in p.split("."):
                cur = cur.get(k) if isinstance(cur, dict) else None
            if isinstance(cur, (int, float)) and not isinstance(cur, bool):
                return float(cur)
        return None

    if kind == "det":
        return {"AP": pick("bbox_AP", "bbox.AP", "AP"), "AP50": pick("bbox_AP50", "bbox.AP50", "AP50"),
                "AP75": pick("bbox_AP75", "bbox.AP75", "AP75")}
    return {"mIoU": pick("mIoU", "metrics.mIoU"), "aAcc": pick("aAcc", "metrics.aAcc")}


def transfer_unavailable(kind: str, task: str) -> Optional[str]:
    """Why ``task`` cannot run here (module, function, task or data missing), else ``None``."""
    try:
        mod = importlib.import_module(TASK_MODULES[kind])
    except ImportError as e:
        return f"{TASK_MODULES[kind]} not importable ({e})"
    if not callable(getattr(mod, "run_task", None)):
        return f"{TASK_MODULES[kind]}.run_task missing"
    try:
        from ..tasks.base import TASKS

        t = TASKS.get(task)
        if t.locate(None) is None:
            return f"data for {task} absent ({t.data_dir})"
    except (ImportError, UserError) as e:
        return _reason(e)
    return None


def run_transfer(kind: str, task: str, ckpt: str, out_dir: Path, iters: int, device: str) -> Dict[str, Any]:
    """One transfer task; ``status`` is ok, failed, or skipped (not recorded) with the reason."""
    why = transfer_unavailable(kind, task)
    if why:
        return {"status": "skipped", "task": task, "reason": why}
    import contextlib

    mod = importlib.import_module(TASK_MODULES[kind])
    t0 = time.time()
    log_path = Path(f"{out_dir}.log")  # the task's own progress output, kept out of the study's
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log_path, "w") as logf, contextlib.redirect_stdout(logf), contextlib.redirect_stderr(logf):
            res = mod.run_task(task, ckpt, out_dir=str(out_dir), max_iter=int(iters), device=device)
    except (ImportError, ModuleNotFoundError) as e:
        return {"status": "skipped", "task": task, "reason": _reason(e)}
    except UserError as e:
        msg = str(e)
        if "not found" in msg or "not available" in msg or "not installed" in msg or "unavailable" in msg:
            return {"status": "skipped", "task": task, "reason": _reason(e)}
        return {"status": "failed", "task": task, "reason": _reason(e), "seconds": round(time.time() - t0, 2)}
    except Exception as e:
        return {"status": "failed", "task": task, "reason": _reason(e), "seconds": round(time.time() - t0, 2)}
    return {"status": "ok", "task": task, "kind": kind, "iters": int(iters), "metrics": _metrics(kind, res or {}),
            "seconds": round(time.time() - t0, 2), "out_dir": str(out_dir), "log": str(log_path)}


# --------------------------------------------------------------------------- one job


def fingerprint(obj: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain_fingerprint(cfg: Dict[str, Any]) -> str:
    """What decides the trained weights: the whole config but where it is written and settings
    that do not apply (LARS's eta under SGD)."""
    c = {k: v for k, v in cfg.items() if k not in ("out_dir", "train")}
    if c.get("optim", {}).get("name") != "lars":
        c["optim"] = {k: v for k, v in c["optim"].items() if k != "lars_eta"}
    return fingerprint(c | {"train": {k: v for k, v in cfg["train"].items() if k in ("amp", "deterministic")}})


def stored_fingerprint(run_dir: Path, rec: Optional[Dict[str, Any]]) -> Optional[str]:
    """The fingerprint of what a folder was trained with: recomputed from its ``config.yaml`` when
    there is one (so a refined fingerprint rule never orphans finished cells), else as recorded."""
    import yaml

    if (run_dir / "config.yaml").is_file():
        try:
            return pretrain_fingerprint(yaml.safe_load((run_dir / "config.yaml").read_text()))
        except Exception:  # noqa: BLE001 - unreadable: fall back to the record
            pass
    return rec.get("fingerprint") if rec else None


def probe_fingerprint(spec: StudySpec) -> str:
    return fingerprint({"probe_train": spec.probe_train, "probe_test": spec.probe_test, "l2_steps": spec.l2_steps,
                        "episodes": spec.episodes, "data": spec.data, "v": 1})


def _pretrain(spec: StudySpec, cell: Cell, cfg: Dict[str, Any], device: str, counters: Dict[str, int]) -> Dict[str, Any]:
    from ..trainer import Trainer

    run_dir = Path(cfg["out_dir"]) / cfg["name"]
    pj = run_dir / "pretrain.json"
    fp = pretrain_fingerprint(cfg)
    rec = _read_json(pj)
    if rec is not None and stored_fingerprint(run_dir, rec) not in (None, fp):
        raise UserError(f"{run_dir} was trained under another setting (steps, batch, data or --set differ); "
                        f"use another --out or remove the folder")
    if _reusable(rec, spec.retry_failed) and (rec["status"] != "ok" or (run_dir / "backbone.safetensors").is_file()):
        counters["pretrain_reused"] += 1
        return rec
    t0 = time.time()
    counters["trained"] += 1
    try:
        tr = Trainer(cfg, device=device, quiet=True)
        start = 0
        if tr.ckpt_path.exists():
            from ..checkpoint import load_state

            start = int(load_state(tr.ckpt_path)["step"])
        out = tr.fit()
        rec = {"status": "ok", "steps": int(out["step"]), "resumed_from": start,
               "images": int(out["step"]) * int(cfg["optim"]["batch_size"]),
               "seconds": round(time.time() - t0, 2), "final": {k: out.get(k) for k in ("loss", "pos_sim", "lr", "momentum")},
               "backbone": str(run_dir / "backbone.safetensors"), "setting": setting_summary(cfg),
               "method": cfg["method"]}
    except UserError as e:
        rec = {"status": "failed", "reason": _reason(e), "seconds": round(time.time() - t0, 2)}
    except Exception as e:  # noqa: BLE001 - one bad cell must not stop the study
        rec = {"status": "failed", "reason": _reason(e), "seconds": round(time.time() - t0, 2)}
    rec["fingerprint"] = fp
    _write_json(pj, _clean_num(rec))
    return rec


def check_setting(spec: StudySpec, cells: List[Cell], facts: Dict[str, Any]) -> None:
    """Refuse, before anything runs, an OUT folder whose cells were trained under another setting
    (finished: ``pretrain.json``; interrupted: the trainer's ``config.yaml``)."""

    for c in cells:
        cfg = cell_config(spec, c, facts["n_train"], facts["size"])
        run_dir = Path(cfg["out_dir"]) / cfg["name"]
        fp = pretrain_fingerprint(cfg)
        old = stored_fingerprint(run_dir, _read_json(run_dir / "pretrain.json"))
        if old is not None and old != fp:
            raise UserError(f"{run_dir} was trained under another setting (steps, batch, data or --set differ); "
                            f"use another --out or remove the folder")


def _counters() -> Dict[str, int]:
    return {"trained": 0, "pretrain_reused": 0, "probed": 0, "cells_reused": 0, "transfer_ran": 0}


def run_cell(spec: StudySpec, cell: Cell, facts: Dict[str, Any], device: str,
             transfer: List[Tuple[str, str]]) -> Dict[str, Any]:
    counters = _counters()
    cfg = cell_config(spec, cell, facts["n_train"], facts["size"])
    cell_dir = Path(cfg["out_dir"]) / cfg["name"]
    cj = cell_dir / "cell.json"
    rec = _read_json(cj)
    fp_pre, fp_probe = pretrain_fingerprint(cfg), probe_fingerprint(spec)
    if rec is not None and stored_fingerprint(cell_dir, rec) not in (None, fp_pre):
        raise UserError(f"{cell_dir} was trained under another setting (steps, batch, data or --set differ); "
                        f"use another --out or remove the folder")
    pretrain_failed = rec is not None and str(rec.get("reason", "")).startswith("pretraining:")
    if _reusable(rec, spec.retry_failed) and (rec.get("probe_fingerprint") == fp_probe or pretrain_failed):
        counters["cells_reused"] += 1
    else:
        pre = _pretrain(spec, cell, cfg, device, counters)
        rec = {"cell": cell.cell_id, **asdict(cell), "fingerprint": fp_pre, "probe_fingerprint": fp_probe, "pretrain": pre}
        if pre["status"] == "ok":
            try:
                counters["probed"] += 1
                rec["probes"] = run_probe_set(pre["backbone"], spec, cell_dir, int(cfg["data"]["size"]),
                                              facts["classes"], device)
                rec["status"] = "ok"
            except Exception as e:  # noqa: BLE001
                rec["status"], rec["reason"] = "failed", f"probes: {_reason(e)}"
        else:
            rec["status"], rec["reason"] = "failed", f"pretraining: {pre.get('reason')}"
        _write_json(cj, _clean_num(rec))
    rec = dict(rec)
    rec["transfer"] = _run_transfers(spec, cell_dir, rec.get("pretrain", {}).get("backbone") if rec.get("status") == "ok" else None,
                                     transfer, device, counters)
    rec["_counters"] = counters
    return rec


def _run_transfers(spec: StudySpec, base_dir: Path, ckpt: Optional[str], transfer: List[Tuple[str, str]],
                   device: str, counters: Dict[str, int]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for kind, task in transfer:
        path = base_dir / "transfer" / f"{task}.json"
        rec = _read_json(path)
        if _reusable(rec, spec.retry_failed) and rec.get("iters") in (None, spec.transfer_iters):
            out[kind] = rec
            continue
        if ckpt is None:
            out[kind] = {"status": "skipped", "task": task, "reason": "the cell has no backbone"}
            continue
        counters["transfer_ran"] += 1
        rec = run_transfer(kind, task, ckpt, base_dir / "transfer" / task, spec.transfer_iters, device)
        rec["iters"] = spec.transfer_iters
        if rec["status"] != "skipped":
            _write_json(path, _clean_num(rec))
        out[kind] = rec
    return out


def run_baseline(spec: StudySpec, name: str, seed: int, arch: str, width: float, size: int, facts: Dict[str, Any],
                 device: str, transfer: List[Tuple[str, str]]) -> Dict[str, Any]:
    """Reference rows probed exactly like the cells: ``random`` (the same backbone, untrained, per
    seed; transferred too) and ``pixels`` (raw pixels; probes only)."""
    counters = _counters()
    bid = f"random__s{seed}" if name == "random" else "pixels"
    base_dir = Path(spec.out) / "baselines" / bid
    ckpt = f"random:{arch}:{width}:{seed}" if name == "random" else "pixels"
    cj = base_dir / "cell.json"
    rec = _read_json(cj)
    fp_probe = probe_fingerprint(spec)
    if _reusable(rec, spec.retry_failed) and rec.get("probe_fingerprint") == fp_probe:
        counters["cells_reused"] += 1
    else:
        rec = {"cell": bid, "baseline": name, "seed": seed, "ckpt": ckpt, "probe_fingerprint": fp_probe}
        try:
            counters["probed"] += 1
            rec["probes"] = run_probe_set(ckpt, spec, base_dir, size, facts["classes"], device)
            rec["status"] = "ok"
        except Exception as e:  # noqa: BLE001
            rec["status"], rec["reason"] = "failed", f"probes: {_reason(e)}"
        _write_json(cj, _clean_num(rec))
    rec = dict(rec)
    rec["transfer"] = _run_transfers(spec, base_dir, ckpt if name == "random" else None,
                                     transfer if name == "random" else [], device, counters)
    rec["_counters"] = counters
    return rec


def run_job(job: Dict[str, Any]) -> Dict[str, Any]:
    """A picklable entry point for worker processes."""
    spec = StudySpec(**job["spec"])
    if job["kind"] == "cell":
        return run_cell(spec, Cell(**job["cell"]), job["facts"], job["device"], [tuple(t) for t in job["transfer"]])
    return run_baseline(spec, job["name"], job["seed"], job["arch"], job["width"], job["size"], job["facts"],
                        job["device"], [tuple(t) for t in job["transfer"]])


# --------------------------------------------------------------------------- workers

_WORKER_SLOT = None


def _init_worker(threads: int, gpus: int, slot) -> None:
    """Per process: its thread count and, with several GPUs, one GPU (before CUDA starts)."""
    global _WORKER_SLOT
    with slot.get_lock():
        i = slot.value
        slot.value += 1
    _WORKER_SLOT = i
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
    import torch

    torch.set_num_threads(max(1, threads))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_device(device: str) -> Tuple[str, int]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda requested but no CUDA device is available")
        return "cuda", torch.cuda.device_count()
    return "cpu", 0


# --------------------------------------------------------------------------- the study


def _default_arch(spec: StudySpec, facts: Dict[str, Any], cells: List[Cell]) -> Tuple[str, float, int]:
    """The shared backbone (arch, width, input size), for the random-init baseline."""
    cfg = cell_config(spec, cells[0], facts["n_train"], facts["size"])
    return cfg["model"]["arch"], float(cfg["model"]["width"]), int(cfg["data"]["size"])


def build_jobs(spec: StudySpec, facts: Dict[str, Any], cells: List[Cell], device: str) -> List[Dict[str, Any]]:
    transfer = [list(t) for t in spec.transfer_tasks]
    sd = spec.to_json()
    jobs = []
    for c in cells:
        tr = transfer if (c.is_default and c.seed < spec.transfer_seeds) else []
        jobs.append({"kind": "cell", "spec": sd, "cell": asdict(c), "facts": facts, "device": device, "transfer": tr})
    if spec.baselines and cells:
        arch, width, size = _default_arch(spec, facts, cells)
        for s in range(spec.seeds):
            jobs.append({"kind": "baseline", "name": "random", "seed": s, "arch": arch, "width": width, "size": size,
                         "spec": sd, "facts": facts, "device": device,
                         "transfer": transfer if s < spec.transfer_seeds else []})
        jobs.append({"kind": "baseline", "name": "pixels", "seed": 0, "arch": arch, "width": width, "size": size,
                     "spec": sd, "facts": facts, "device": device, "transfer": []})
    return jobs


def run_study(spec: StudySpec, log: Callable[[str], None] = print, doc: Optional[str] = None) -> Dict[str, Any]:
    """Run (or resume) the study; write ``table.md``, ``table.json``, ``plot.svg`` (and the doc).

    Returns ``{"rows", "counts", "paths", ...}``; ``counts`` says how many cells were trained,
    probed, reused in this invocation.
    """
    from .table import build_table, write_outputs

    t_start = time.time()
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    facts = dataset_facts(spec.data)
    cells = plan_cells(spec.methods, spec.variants, spec.seeds)
    if not cells:
        raise UserError("no cell to run: none of the methods has the requested forms")
    device, n_gpu = resolve_device(spec.device)
    jobs_n = max(1, int(spec.jobs))
    cores = available_cores()
    threads = int(spec.threads) if spec.threads else max(1, cores // jobs_n)
    check_setting(spec, cells, facts)
    jobs = build_jobs(spec, facts, cells, device)
    log(f"transfer bench methods: {len(cells)} cells ({len(spec.methods)} methods x {len(spec.variants)} variants "
        f"x {spec.seeds} seeds) + {len(jobs) - len(cells)} baselines on {spec.data}; {spec.steps} steps x batch "
        f"{spec.batch}; {jobs_n} job(s) x {threads} thread(s) on {device}; out {out}")
    results: List[Dict[str, Any]] = []
    done = 0

    def note(r: Dict[str, Any]) -> None:
        nonlocal done
        done += 1
        c = r.get("_counters", {})
        what = "reused" if c.get("cells_reused") else ("trained + probed" if c.get("trained") else "probed")
        extra = ""
        if r.get("status") != "ok":
            extra = f"  FAILED: {r.get('reason')}"
        for kind, t in (r.get("transfer") or {}).items():
            if t.get("status") == "ok":
                extra += f"  {t['task']}: " + ", ".join(f"{k} {v:.2f}" for k, v in t["metrics"].items() if v is not None)
            elif t.get("status") in ("skipped", "failed"):
                extra += f"  {t['task']} {t['status']}"
        s = (r.get("probes") or {}).get("summary", {})
        num = f"  k-NN {s['knn_top1_k20']:.2f}  linear {s['linear_top1']:.2f}" if s.get("linear_top1") is not None \
            and s.get("knn_top1_k20") is not None else ""
        log(f"[{done}/{len(jobs)}] {r.get('cell')}: {what}{num}{extra}")

    if jobs_n == 1:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for j in jobs:
                results.append(run_job(j))
                note(results[-1])
        finally:
            torch.set_num_threads(old)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        slot = ctx.Value("i", 0)
        with ProcessPoolExecutor(max_workers=jobs_n, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads, n_gpu if device == "cuda" else 0, slot)) as ex:
            futs = {ex.submit(run_job, j): j for j in jobs}
            for f in as_completed(futs):
                try:
                    r = f.result()
                except Exception as e:  # a worker died (killed, out of memory): the others go on
                    j = futs[f]
                    name = Cell(**j["cell"]).cell_id if j["kind"] == "cell" else j["name"]
                    r = {"cell": name, "status": "failed", "reason": f"worker: {_reason(e)}", "_counters": {}}
                results.append(r)
                note(r)
    counts = {k: sum(int(r.get("_counters", {}).get(k, 0)) for r in results)
              for k in ("trained", "pretrain_reused", "probed", "cells_reused", "transfer_ran")}
    wall = round(time.time() - t_start, 2)
    sj = out / "study.json"
    hist = (_read_json(sj) or {}).get("invocations", [])
    hist.append({"started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t_start)), "wall_s": wall, **counts})
    machine = {"platform": platform.platform(), "python": sys.version.split()[0], "cores": cores,
               "jobs": jobs_n, "threads_per_job": threads, "device": device, "gpus": n_gpu}
    try:
        import torch

        machine["torch"] = torch.__version__
        if device == "cuda":
            machine["device_name"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    study = {"spec": spec.to_json(), "facts": facts, "machine": machine, "invocations": hist}
    _write_json(sj, study)
    table = build_table(spec, cells, results, study)
    table["counts"] = counts
    paths = write_outputs(table, out, doc=doc)
    log(f"transfer bench methods: {counts['trained']} cells trained, {counts['cells_reused']} reused, "
        f"{counts['transfer_ran']} transfer runs; {wall:.0f} s; table {paths['md']}")
    return {**table, "paths": {k: str(v) for k, v in paths.items()}}
