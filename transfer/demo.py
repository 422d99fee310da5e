"""The end-to-end demo on Fashion-MNIST, on CPU: pretrain -> k-NN against baselines -> probes ->
1 % fine-tuning -> detection (fmnist_det, trees_det) -> segmentation (fmnist_seg, nuclei_seg) ->
publish to a local model zoo -> one report (``runs/demo/report.{md,html}``) of all of it, the
pretrained export beside random init and raw pixels wherever the protocol applies.

Every stage writes under ``runs/demo``; rerunning resumes the pretraining from its checkpoint and
reuses the cached features, so an interrupted demo picks up quickly; ``--stages`` picks stages. Timings are printed per stage and saved with
the numbers in ``runs/demo/demo_summary.json``. The four fine-tuning runs of the detection stage
(two tasks, export and random init) run ``--jobs`` at a time in single-thread worker processes
(:mod:`transfer.parallel`): Faster R-CNN at 4 images a step keeps two threads poorly busy (measured
alone: 372 s instead of 466 s for the stage). Everything else runs in this process on every thread:
the probes' L-BFGS sweeps and the segmentation runs use both threads (side by side the probes took
301 s instead of 192 s, segmentation 164 s instead of 161 s). ``--jobs 1`` runs detection in turn.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .checkpoint import atomic_write_text
from .config import load_config
from .errors import UserError
from .parallel import default_jobs, run_parallel
from .tasks import run_task

STAGES = ["pretrain", "knn", "probe", "finetune", "det", "seg", "zoo", "report"]
#: what ``transfer demo`` runs by default: ``knn`` is left out because ``probe`` reports the same
#: k-NN (k = 20) numbers beside the linear and few-shot probes; ``--stages pretrain,knn`` is the short demo
DEFAULT_STAGES = [s for s in STAGES if s != "knn"]
RANDOM_SPEC = "random:{arch}:{width}:0"


def _say(msg: str) -> None:
    print(msg, flush=True)


class Demo:
    def __init__(self, out: Path, recipe: str = "demo_fmnist", overrides: Optional[List[str]] = None,
                 device: str = "auto", quick: bool = False, jobs: Optional[int] = None) -> None:
        self.out = out
        self.jobs = default_jobs() if jobs is None else max(1, int(jobs))
        self.recipe, self.overrides, self.device, self.quick = recipe, list(overrides or []), device, quick
        self.run_dir = out / "pretrain"
        self.summary_path = out / "demo_summary.json"
        self.summary: Dict[str, Any] = json.loads(self.summary_path.read_text()) if self.summary_path.exists() else {}

    def _save(self) -> None:
        atomic_write_text(self.summary_path, json.dumps(self.summary, indent=1))

    # -------------------------------------------------------------- stages
    def pretrain(self) -> Dict[str, Any]:
        from .trainer import Trainer

        cfg = load_config(self.recipe, self.overrides + [f"out_dir={self.out}", "name=pretrain"])
        self.cfg = cfg
        tr = Trainer(cfg, device=self.device)
        try:
            res = tr.fit()
        finally:
            tr.close()
        res["budget"] = {"images": tr.step * tr.global_batch, "epochs": round(tr.step / tr.steps_per_epoch, 3),
                         "arch": cfg["model"]["arch"], "width": cfg["model"]["width"], "size": cfg["data"]["size"],
                         "method": f"{cfg['method']['name']}/{tr.method.form}{'+ema' if tr.method.momentum else ''}"}
        return res

    def _random_spec(self) -> str:
        cfg = load_config(self.recipe, self.overrides)
        return RANDOM_SPEC.format(arch=cfg["model"]["arch"], width=cfg["model"]["width"])

    def knn(self) -> Dict[str, Any]:
        """DINO weighted k-NN (k = 20, T = 0.07, FAISS, full 60k train bank, 10k test) of the
        exported backbone, a random-init backbone of the same architecture, and raw pixels."""
        from probes.run import ProbeConfig, run_probes

        cfg = load_config(self.recipe, self.overrides)
        pc = ProbeConfig(size=cfg["data"]["size"], ks=(20,), device="cpu")
        out: Dict[str, Any] = {}
        for label, spec in (("ssl", str(self.run_dir)), ("random_init", self._random_spec()), ("raw_pixels", "pixels")):
            rep = run_probes(["knn"], spec, "fashion_mnist", self.out / "knn" / label, pc, stem="knn")
            out[label] = {"spec": spec, "knn_top1_k20": rep["summary"]["knn_top1_k20"],
                          "top5_k20": rep["probes"]["knn"]["top5"].get(20)}
        _say("  weighted k-NN top-1 on the Fashion-MNIST test set (k=20, T=0.07, 60k bank):")
        for label, r in out.items():
            _say(f"    {label:12s} {r['knn_top1_k20']:6.2f} %   ({r['spec']})")
        return out

    def probe(self) -> Dict[str, Any]:
        from probes.run import ProbeConfig, run_all

        cfg = load_config(self.recipe, self.overrides)
        # the linear probe's default sweep, as `transfer probe all` runs it (the README's command)
        pc = ProbeConfig(size=cfg["data"]["size"], episodes=600 if not self.quick else 100)
        res: Dict[str, Any] = {}
        for label, spec in (("ssl", str(self.run_dir)), ("random_init", self._random_spec()), ("raw_pixels", "pixels")):
            rep = run_all(spec, "fashion_mnist", self.run_dir / "probes" / label if label == "ssl" else self.out / "probes" / label, pc)
            res[label] = rep["summary"]
            _say(f"  {label:12s} " + "  ".join(f"{k}={v:.2f}" for k, v in rep["summary"].items()
                                                if isinstance(v, float)))
        return res

    def finetune(self) -> Dict[str, Any]:
        """Semi-supervised protocol: fine-tune the whole backbone on 1 % of the labels (class-balanced),
        beside random init fine-tuned the same way and raw-pixel logistic regression on the same labels."""
        from probes.finetune import FinetuneConfig, run_finetune
        from probes.run import ProbeConfig

        cfg = load_config(self.recipe, self.overrides)
        rep = run_finetune(str(self.run_dir), "fashion_mnist", self.out / "finetune",
                           ProbeConfig(size=cfg["data"]["size"]), FinetuneConfig(labels="1%"))
        s = rep["summary"]
        _say("  1 % labels, test top-1: " + "  ".join(f"{k[9:-5]}={v:.2f}" for k, v in s.items()
                                                      if k.startswith("finetune_") and k.endswith("_top1")))
        return s

    def _tasks(self, kind: str, schedules: Dict[str, Optional[int]], jobs: int) -> Dict[str, Dict[str, Any]]:
        """Each task (name -> iterations, None: its default) on the export and on random init, the
        runs ``jobs`` at a time; printed and returned per task and backbone."""
        runs = [(task, label, spec, max_iter) for task, max_iter in schedules.items()
                for label, spec in (("ssl", str(self.run_dir)), ("random_init", self._random_spec()))]
        outs = [(self.run_dir / "transfer" / task) if label == "ssl" else (self.out / "transfer" / task / label)
                for task, label, _, _ in runs]
        results = run_parallel([(run_task, (task, spec), {"out_dir": out_dir, "max_iter": max_iter, "device": "cpu"})
                                for (task, _, spec, max_iter), out_dir in zip(runs, outs)], jobs)
        res: Dict[str, Dict[str, Any]] = {task: {} for task in schedules}
        for (task, label, spec, _), out_dir, r in zip(runs, outs, results):
            if kind == "detection":
                head = {f"bbox_{k}": r["bbox"][k] for k in ("AP", "AP50", "AP75")}
            else:
                head = {k: r[k] for k in ("mIoU", "aAcc", "mAcc")}
            head.update(spec=spec, iters=r.get("iters") or r.get("schedule", {}).get("max_iter"), out_dir=str(out_dir))
            res[task][label] = head
            _say(f"  {task} {label:12s} " + "  ".join(f"{k}={v:.2f}" for k, v in head.items() if isinstance(v, float)))
        return res

    def det(self) -> Dict[str, Any]:
        return self._tasks("detection", {"fmnist_det": 20 if self.quick else None, "trees_det": 20 if self.quick else 30},
                           self.jobs)

    def seg(self) -> Dict[str, Any]:
        # in turn, on every thread: the segmentation runs (batch 8) use both threads well (side by
        # side in single-thread workers: 164 s, in turn: 161 s)
        return self._tasks("segmentation", {"fmnist_seg": 30 if self.quick else None,
                                            "nuclei_seg": 30 if self.quick else None}, 1)

    def report(self) -> Dict[str, Any]:
        from .demo_report import write_demo_report

        paths = write_demo_report(self.out, self.summary, self.run_dir / "log.jsonl")
        _say(f"  report: {paths['md']}  {paths['html']}")
        return {k: str(v) for k, v in paths.items()}

    def zoo(self) -> Dict[str, Any]:
        from model_zoo import api

        zoo = self.out / "zoo"
        card = api.publish(self.run_dir, "demo-" + load_config(self.recipe, self.overrides)["method"]["name"],
                           zoo=str(zoo), force=True)
        text = api.show(card["name"], zoo=str(zoo)) if hasattr(api, "show") else ""
        _say(text if isinstance(text, str) else json.dumps(text, indent=1))
        return {"zoo": str(zoo), "name": card["name"]}

    # -------------------------------------------------------------- driver
    def run(self, stages: List[str]) -> Dict[str, Any]:
        t_all = time.time()
        for st in stages:
            fn: Callable[[], Dict[str, Any]] = getattr(self, st)
            _say(f"[demo] stage {st} ...")
            t0 = time.time()
            try:
                res = fn()
            except ModuleNotFoundError as e:
                _say(f"[demo] stage {st} skipped: {e.name} is not available")
                continue
            self.summary[st] = {"result": res, "seconds": round(time.time() - t0, 1)}
            self._save()
            _say(f"[demo] stage {st} done in {time.time() - t0:.0f} s")
        _say(f"[demo] finished in {time.time() - t_all:.0f} s; summary: {self.summary_path}")
        return self.summary


def run_demo(out: str, stages: List[str], recipe: str, overrides: List[str], device: str, quick: bool,
             jobs: Optional[int] = None) -> int:
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise UserError(f"unknown demo stage(s) {bad}; stages: {','.join(STAGES)}")
    from .data.datasets import fashion_mnist

    fashion_mnist("test")  # fail early and clearly when the data is not installed
    Demo(Path(out), recipe, overrides, device, quick, jobs).run(stages)
    sys.stdout.flush()
    return 0
