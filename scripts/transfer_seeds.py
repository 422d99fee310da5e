"""Pretrained vs random init on the transfer tasks, over several fine-tuning seeds.

    python scripts/transfer_seeds.py --ckpt runs/demo/pretrain --tasks fmnist_det,fmnist_seg --seeds 0,1,2

For every task, backbone (``--ckpt`` and ``--random``, a random-init spec of the same architecture)
and fine-tuning seed it runs ``transfer run TASK --ckpt SPEC seed=S --out ...`` (the user's command,
so the numbers are the CLI's), reusing a run whose ``results.json`` already exists only when it was
made from the same weights (sha256) with the same iteration count and seed (rerun to resume; a
mismatch is an error naming the folder), then writes ``summary.json`` and ``summary.md``: per task the metric's mean and sample std (n - 1)
per backbone, the gap of the means, the pooled std sqrt((s_a^2 + s_b^2) / 2), and whether the gap
exceeds twice the pooled std (issue 14's criterion), and the paired difference over the seeds with
its 95 % t interval (:func:`transfer.study.stats.paired_interval`; fine-tuning seed s on both sides). The backbone initialisation of the random
baseline is fixed (its spec's seed); only the fine-tuning seed varies, as for the pretrained side.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

from transfer.checkpoint import atomic_write_text
from transfer.config import parse_override
from transfer.sources import load_source
from transfer.study.stats import mean_std, paired_interval
from transfer.tasks import TASKS

METRIC = {"det": ("bbox", "AP"), "seg": (None, "mIoU")}


def metric(task: str, res: Dict) -> float:
    group, key = METRIC[TASKS.get(task).kind]
    return float((res[group] if group else res)[key])


def run_facts(res: Dict[str, Any]) -> Dict[str, Any]:
    """What a results.json says it was made from: weights, iterations, fine-tuning seed."""
    sched = res.get("schedule") or {}
    return {"weights_sha256": (res.get("ckpt") or {}).get("weights_sha256"),
            "max_iter": sched.get("max_iter", res.get("max_iter")),
            "seed": (res.get("settings") or {}).get("seed", (res.get("model") or {}).get("seed"))}


@functools.lru_cache(maxsize=None)
def weights_identity(spec: str) -> str:
    """The sha256 of ``spec``'s weights, loaded once per spec (not once per seed)."""
    return load_source(spec).identity


def wanted(task: str, spec: str, seed: int, extra: List[str]) -> Dict[str, Any]:
    over: Dict[str, Any] = {}
    for o in extra:
        over.update(parse_override(o))
    return {"weights_sha256": weights_identity(spec),
            "max_iter": int(over.get("max_iter", TASKS.get(task).settings["max_iter"])), "seed": seed}


def run_one(task: str, spec: str, seed: int, out: Path, extra: List[str]) -> Dict:
    res_file = out / "results.json"
    if res_file.exists():
        have, want = run_facts(json.loads(res_file.read_text())), wanted(task, spec, seed, extra)
        bad = [k for k in want if have.get(k) is not None and have[k] != want[k]]
        if bad:
            raise SystemExit(f"{res_file} was made with {bad[0]}={have[bad[0]]!r}, not {want[bad[0]]!r}; "
                             f"pass another --out or remove it")
    else:
        cmd = [sys.executable, "-m", "transfer", "run", task, "--ckpt", spec, "--device", "cpu", "--out", str(out),
               f"seed={seed}", *extra]
        print("+", " ".join(cmd), flush=True)
        log = out.parent / f"{out.name}.log"
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
        if rc != 0 or not res_file.exists():
            raise SystemExit(f"{task} {spec} seed {seed} failed (exit {rc}); see {log}")
    return json.loads(res_file.read_text())


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default="runs/demo/pretrain")
    ap.add_argument("--random", default="random:small_resnet18:0.25:0")
    ap.add_argument("--tasks", default="fmnist_det,fmnist_seg")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="runs/seeds")
    ap.add_argument("overrides", nargs="*", help="task settings key=value, passed to every run")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    out = Path(a.out)
    summary: Dict[str, Dict] = {}
    lines = ["| task | metric | pretrained (mean ± std) | random init (mean ± std) | gap | pooled std | gap > 2 x pooled std "
             "| paired gap, 95 % t interval |", "|---|---|---|---|---|---|---|---|"]
    for task in a.tasks.split(","):
        per: Dict[str, List[float]] = {}
        for label, spec in (("pretrained", a.ckpt), ("random_init", a.random)):
            per[label] = [metric(task, run_one(task, spec, s, out / task / label / f"seed{s}", a.overrides))
                          for s in seeds]
        st_p, st_r = mean_std(per["pretrained"]), mean_std(per["random_init"])
        (mp, sp), (mr, sr) = (st_p["mean"], st_p["std"] or 0.0), (st_r["mean"], st_r["std"] or 0.0)
        pooled = math.sqrt((sp ** 2 + sr ** 2) / 2)
        gap = mp - mr
        diff = paired_interval(dict(zip(seeds, per["pretrained"])), dict(zip(seeds, per["random_init"])))
        name = METRIC[TASKS.get(task).kind][1]
        summary[task] = {"metric": name, "seeds": seeds, "values": per, "pretrained_mean": mp, "pretrained_std": sp,
                         "random_mean": mr, "random_std": sr, "gap": gap, "pooled_std": pooled,
                         "separated": bool(gap > 2 * pooled), "paired": diff}
        ci = f"[{diff['lo']:+.2f}, {diff['hi']:+.2f}]" if diff["lo"] is not None else "n/a"
        lines.append(f"| {task} | {name} | {mp:.2f} ± {sp:.2f} | {mr:.2f} ± {sr:.2f} | {gap:+.2f} | {pooled:.2f} | "
                     f"{'yes' if gap > 2 * pooled else 'no'} | {ci} |")
        print(lines[-1], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", json.dumps({"ckpt": a.ckpt, "random": a.random, "tasks": summary}, indent=1))
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
