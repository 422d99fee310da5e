"""Run (or resume) the study: cells one after another, each phase's record written atomically.

``OUT/cells/<id>/`` holds the trainer's run folder (the trainer resumes a killed cell from its
``checkpoint.pt``) and ``cell.json`` (pretraining + probes: the finished cell); ``OUT/cells/<id>/
transfer/<task>.json`` one fine-tuning run; ``OUT/baselines/`` the random-init and raw-pixel rows.
A rerun reuses every record that exists, so an interrupted study resumes; a record made under
another setting is refused (the trainer's own notion of "the same run", :func:`run_identity`).
A failed phase is recorded and not retried unless ``retry_failed``; a cell whose training diverges
(non-finite loss, :class:`TrainingDiverged`) is recorded as ``diverged`` with its step, a result of
the shared setting, and never retried; a task that cannot run here
(:class:`TaskUnavailable`) is not recorded, so it runs once its data or engine is present. A
finished cell or baseline whose probe record today's probes would not reproduce (a fix of the
linear probe's stop rule, :func:`probes_current`) is re-probed on its export, never retrained.
After ``max_minutes`` no new phase starts: the invocation stops between phases and says how many
remain.
"""
from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml
from probes.linear import sweep_is_current
from probes.run import ProbeConfig, run_probes

from ..checkpoint import atomic_write_text
from ..devices import resolve_device
from ..errors import TaskUnavailable, UserError
from ..tasks import TASKS, run_task
from ..trainer import Trainer, TrainingDiverged, identity_mismatch, run_identity, train_precision
from .doc import build_table, write_doc
from .plan import Cell, cell_config, plan_cells


@dataclass
class StudySpec:
    out: str
    methods: List[str]
    recipe: str
    epochs: float
    seeds: int
    transfer_iters: int
    tasks: List[str] = field(default_factory=lambda: ["fmnist_det", "fmnist_seg"])
    variants: Optional[List[str]] = None  # None: all
    overrides: List[str] = field(default_factory=list)
    device: str = "cpu"
    max_minutes: float = 150.0
    retry_failed: bool = False
    budget: str = "custom"
    command: str = ""
    tuned: Tuple[Tuple[str, str, Tuple[Tuple[str, Any], ...]], ...] = ()  # Budget.tuned


def read_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # absent (or torn outside atomic_write): redo the phase


def write_json(path: Path, obj: Dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), json.dumps(obj, indent=1, default=str) + "\n")


def _reason(e: BaseException) -> str:
    if isinstance(e, UserError):
        return str(e).splitlines()[0][:300]
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:240]}{where}"


def _identity(cfg: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(run_identity(cfg), default=str))  # as a JSON record stores it


def run_transfer_task(task: str, ckpt: str, out_dir: Path, iters: int, seed: int, device: str) -> Dict[str, float]:
    """One fine-tuning run of a registered task -> its headline metrics. The study's only way into
    the task engines (raises :class:`TaskUnavailable` when data or engine is missing)."""

    res = run_task(task, ckpt, out_dir=str(out_dir), max_iter=iters, device=device, seed=seed, progress=False)
    if TASKS.get(task).kind == "det":
        return {k: float(res["bbox"][k]) for k in ("AP", "AP50")}
    return {"mIoU": float(res["mIoU"])}


def probes_current(folder: Path) -> bool:
    """Whether the probe record in ``folder/probes`` is what today's probes would report: its linear
    sweep ends where the current stop rule would end it (:func:`probes.linear.sweep_is_current`). A
    record without one (made before probes.json existed) is judged current."""
    rep = read_json(folder / "probes" / "probes.json")
    lin = ((rep or {}).get("probes") or {}).get("linear")
    return lin is None or sweep_is_current(lin)


def _probes(ckpt: str, data: str, size: int, out_dir: Path, device: str) -> Dict[str, Any]:
    """k-NN (k=20 reported) and the linear probe, exactly as ``transfer probe`` runs them, at the
    cells' input size (the baselines too)."""

    t = time.time()
    rep = run_probes(["knn", "linear"], ckpt, data, out_dir, ProbeConfig(size=size, device=device, use_cache=False),
                     stem="probes")
    s = rep["summary"]
    return {"knn": s.get("knn_top1_k20"), "linear": s.get("linear_top1"), "probe_s": round(time.time() - t, 1),
            "warnings": rep["warnings"][:10]}


class Study:
    def __init__(self, spec: StudySpec, log: Callable[[str], None] = print) -> None:
        self.spec, self.log, self.out = spec, log, Path(spec.out)
        self.cells = plan_cells(spec.methods, spec.seeds, spec.variants, spec.tuned)
        if not self.cells:
            raise UserError("no cell to run: none of the methods has the requested variants")
        self.cfgs = {c.cell_id: cell_config(spec.recipe, spec.epochs, spec.overrides, spec.out, c) for c in self.cells}
        first = self.cfgs[self.cells[0].cell_id]
        self.data, self.size = first["data"]["name"], int(first["data"]["size"])
        self.arch = f"{first['model']['arch']}:{first['model']['width']}"
        self.precision = train_precision(first, resolve_device(spec.device))
        self.counts = {"trained": 0, "probed": 0, "reprobed": 0, "reused": 0, "transfer_ran": 0, "transfer_skipped": 0}

    # ------------------------------------------------------------------ the plan as phases
    def phases(self) -> List[Dict[str, Any]]:
        """Every phase in run order: per seed its cells (each followed by its transfer runs), then
        that seed's random-init row; raw pixels first."""
        ph = [{"what": "probe", "id": "pixels", "ckpt": "pixels", "path": self.out / "baselines" / "pixels" / "cell.json"}]
        for s in range(self.spec.seeds):
            for c in [c for c in self.cells if c.seed == s]:
                d = self.out / "cells" / c.cell_id
                ph.append({"what": "cell", "id": c.cell_id, "cell": c, "path": d / "cell.json"})
                if c.transfer:
                    ph += [{"what": "transfer", "id": c.cell_id, "task": t, "seed": s, "dir": d,
                            "path": d / "transfer" / f"{t}.json"} for t in self.spec.tasks]
            d = self.out / "baselines" / f"random__s{s}"
            ph.append({"what": "probe", "id": f"random__s{s}", "ckpt": f"random:{self.arch}:{s}", "seed": s,
                       "path": d / "cell.json"})
            ph += [{"what": "transfer", "id": f"random__s{s}", "task": t, "seed": s, "dir": d, "ckpt": f"random:{self.arch}:{s}",
                    "path": d / "transfer" / f"{t}.json"} for t in self.spec.tasks]
        return ph

    @staticmethod
    def ckpt_id(p: Dict[str, Any]) -> Optional[str]:
        """What a transfer phase fine-tunes: the random-init spec, or the sha256 of the cell's export
        (a cell retrained under the same name gives another one)."""
        if "ckpt" in p:
            return p["ckpt"]
        f = p["dir"] / "backbone.safetensors"
        return "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else None

    def done(self, p: Dict[str, Any]) -> bool:
        """A record is reused only when it was made from what this phase would run (records from
        before a key existed are judged on the keys they have)."""
        rec = read_json(p["path"])
        if rec is None or (rec["status"] == "failed" and self.spec.retry_failed):
            return False
        if p["what"] == "transfer":
            return rec.get("iters") == self.spec.transfer_iters and rec.get("ckpt_id", self.ckpt_id(p)) == self.ckpt_id(p)
        if p["what"] == "probe":
            return (rec.get("ckpt") == p["ckpt"] and rec.get("data") == self.data and rec.get("size", self.size) == self.size
                    and (rec["status"] != "ok" or probes_current(p["path"].parent)))
        # a cell: its identity is checked up front; a probe fix re-probes its export, never retrains it
        return rec["status"] != "ok" or probes_current(p["path"].parent)

    def check_setting(self) -> None:
        """Refuse, before anything runs, cells trained under another setting (finished: cell.json;
        interrupted: the trainer's config.yaml)."""

        for c in self.cells:
            now = _identity(self.cfgs[c.cell_id])
            d = self.out / "cells" / c.cell_id
            rec = read_json(d / "cell.json")
            old = rec.get("identity") if rec else None
            if old is None and (d / "config.yaml").is_file():
                old = _identity(yaml.safe_load((d / "config.yaml").read_text()))
            bad = identity_mismatch(old, now) if old is not None else None
            if bad is not None:
                raise UserError(f"{d} was trained under another setting ({bad[0]}={bad[1]}, now {bad[2]!r}); "
                                f"use another --out or remove the folder")
            # records from before the key: trained in float32 (train.amp auto meant fp32 on the CPU then)
            was = rec.get("precision", "float32") if rec and rec.get("status") == "ok" else None
            if was is not None and was != self.precision:
                raise UserError(f"{d} was trained in {was}, this machine trains the study in {self.precision} "
                                f"(train.amp); use another --out, remove the folder, or pass train.amp to match")

    # ------------------------------------------------------------------ phases
    def run_cell(self, c: Cell, path: Path) -> None:
        cfg = self.cfgs[c.cell_id]
        rec: Dict[str, Any] = {**asdict(c), "cell": c.cell_id, "identity": _identity(cfg), "data": self.data}
        t = time.time()
        try:
            self.counts["trained"] += 1
            res = Trainer(cfg, device=self.spec.device, quiet=True).fit()
            rec.update(steps=int(res["step"]), pos_sim=res.get("pos_sim"), precision=res["precision"],
                       pretrain_s=round(time.time() - t, 1))
            self.counts["probed"] += 1
            rec.update(_probes(str(path.parent / "backbone.safetensors"), self.data, self.size, path.parent / "probes",
                               self.spec.device), status="ok")
        except TrainingDiverged as e:  # a result of the shared setting: recorded, never retried
            rec.update(status="diverged", step=e.step, reason=_reason(e), pretrain_s=round(time.time() - t, 1))
        except Exception as e:  # noqa: BLE001 - one bad cell must not stop the study
            rec.update(status="failed", reason=_reason(e))
        write_json(path, rec)

    def reprobe_cell(self, path: Path) -> None:
        """A finished cell whose probe record is stale: the probes rerun on its export; the training
        fields stay (the former numbers are kept under ``superseded_probes``)."""
        rec = read_json(path) or {}
        old = {k: rec.get(k) for k in ("knn", "linear", "probe_s", "warnings")}
        self.counts["reprobed"] += 1
        try:
            rec.update(_probes(str(path.parent / "backbone.safetensors"), self.data, self.size, path.parent / "probes",
                               self.spec.device), superseded_probes=old)
        except Exception as e:  # noqa: BLE001
            rec.update(status="failed", reason=_reason(e))
        write_json(path, rec)

    def run_probe(self, p: Dict[str, Any]) -> None:
        rec: Dict[str, Any] = {"cell": p["id"], "ckpt": p["ckpt"], "data": self.data, "size": self.size,
                               "seed": p.get("seed")}
        try:
            self.counts["probed"] += 1
            rec.update(_probes(p["ckpt"], self.data, self.size, p["path"].parent / "probes", self.spec.device),
                       status="ok")
        except Exception as e:  # noqa: BLE001
            rec.update(status="failed", reason=_reason(e))
        write_json(p["path"], rec)

    def run_transfer(self, p: Dict[str, Any]) -> Optional[str]:
        ckpt = p.get("ckpt") or str(p["dir"] / "backbone.safetensors")
        if "ckpt" not in p and (read_json(p["dir"] / "cell.json") or {}).get("status") != "ok":
            return "skipped: the cell has no backbone"
        rec: Dict[str, Any] = {"cell": p["id"], "task": p["task"], "iters": self.spec.transfer_iters, "seed": p["seed"],
                               "ckpt_id": self.ckpt_id(p)}
        t = time.time()
        try:
            self.counts["transfer_ran"] += 1
            # the engine's folder names the schedule: another --transfer-iters trains afresh beside it
            rec.update(metrics=run_transfer_task(p["task"], ckpt, p["dir"] / "transfer" / f"{p['task']}_{self.spec.transfer_iters}it",
                                                 self.spec.transfer_iters, p["seed"], self.spec.device), status="ok")
        except TaskUnavailable as e:
            self.counts["transfer_skipped"] += 1
            return f"skipped: {_reason(e)}"  # not recorded: runs once the task is available
        except Exception as e:  # noqa: BLE001
            rec.update(status="failed", reason=_reason(e))
        rec["seconds"] = round(time.time() - t, 1)
        write_json(p["path"], rec)
        return rec["status"]

    # ------------------------------------------------------------------ the invocation
    def run(self) -> Dict[str, Any]:
        t0 = time.time()
        self.out.mkdir(parents=True, exist_ok=True)
        self.check_setting()
        phases = self.phases()
        todo = [p for p in phases if not self.done(p)]
        self.counts["reused"] = len(phases) - len(todo)
        self.log(f"transfer bench methods: {len(self.cells)} cells, {len(phases)} phases on {self.data}; "
                 f"{len(todo)} to run, {self.counts['reused']} reused; out {self.out}")
        skipped: List[str] = []
        left = cells_left = 0
        earlier = (read_json(self.out / "study.json") or {}).get("invocations", [])

        def record(left: int, cells_left: int, finished: bool) -> List[Dict[str, Any]]:
            """This invocation's line in study.json, rewritten after every phase so that a killed
            invocation still counts its wall time and work (``finished: false``)."""
            invs = earlier + [{"wall_s": round(time.time() - t0, 1), "left": left, "cells_left": cells_left,
                               "finished": finished, **self.counts}]
            write_json(self.out / "study.json", {"invocations": invs})
            return invs

        for i, p in enumerate(todo):
            if time.time() - t0 > self.spec.max_minutes * 60:
                left, cells_left = len(todo) - i, sum(q["what"] == "cell" for q in todo[i:])
                break
            if p["what"] == "cell" and (read_json(p["path"]) or {}).get("status") == "ok":
                self.reprobe_cell(p["path"])
                note = "re-probed (" + read_json(p["path"])["status"] + ")"
            elif p["what"] == "cell":
                self.run_cell(p["cell"], p["path"])
                note = read_json(p["path"])["status"]
            elif p["what"] == "probe":
                self.run_probe(p)
                note = read_json(p["path"])["status"]
            else:
                note = self.run_transfer(p) or ""
                if note.startswith("skipped"):
                    skipped.append(f"{p['id']} {p['task']}: {note}")
            self.log(f"[{i + 1}/{len(todo)}] {p['what']} {p['id']}{' ' + p['task'] if 'task' in p else ''}: {note}")
            record(len(todo) - i - 1, sum(q["what"] == "cell" for q in todo[i + 1:]), False)
        invocations = record(left, cells_left, True)
        wall = invocations[-1]["wall_s"]
        if left:
            self.log(f"transfer bench methods: stopped after {self.spec.max_minutes:g} min: {cells_left} of "
                     f"{len(self.cells)} cells and {left} of {len(phases)} phases (cells, probes, transfer runs) "
                     f"remain; rerun the same command to resume")
        return {"left": left, "counts": dict(self.counts), "skipped": skipped, "wall_s": wall,
                "invocations": invocations, "records": self.records()}

    def records(self) -> Dict[str, Any]:
        """Everything measured so far: cells, baselines and transfer records, read back from disk."""
        cells = [read_json(self.out / "cells" / c.cell_id / "cell.json") or {**asdict(c), "cell": c.cell_id,
                                                                             "status": "not run"} for c in self.cells]
        base = [r for r in (read_json(p["path"]) for p in self.phases() if p["what"] == "probe") if r]
        tr = [r for r in (read_json(p["path"]) for p in self.phases() if p["what"] == "transfer") if r]
        return {"cells": cells, "baselines": base, "transfer": tr}


def run_study(spec: StudySpec, doc: Optional[str] = None, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run or resume; write ``OUT/table.json``, ``OUT/benchmarks.md`` (and ``doc``). Returns the table."""

    study = Study(spec, log)
    res = study.run()
    table = build_table(spec, study.cells, res["records"], study.cfgs[study.cells[0].cell_id], res)
    write_json(Path(spec.out) / "table.json", table)
    for path in [Path(spec.out) / "benchmarks.md"] + ([Path(doc)] if doc else []):
        write_doc(table, path)
    log(f"transfer bench methods: {res['counts']['trained']} cells trained, {res['counts']['reused']} phases reused, "
        f"{res['counts']['transfer_ran']} transfer runs; {res['wall_s']:.0f} s; {Path(spec.out) / 'benchmarks.md'}")
    return table
