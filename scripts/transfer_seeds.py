"""Pretrained vs random init on the transfer tasks, over several fine-tuning seeds.

    python scripts/transfer_seeds.py --ckpt runs/demo/pretrain --tasks fmnist_det,fmnist_seg --seeds 0,1,2

For every task, backbone (``--ckpt`` and ``--random``, a random-init spec of the same architecture)
and fine-tuning seed it runs ``transfer run TASK --ckpt SPEC seed=S --out ...`` (the user's command,
so the numbers are the CLI's), skipping runs whose ``results.json`` already exists (rerun to resume),
then writes ``summary.json`` and ``summary.md``: per task the metric's mean and sample std (n - 1)
per backbone, the gap of the means, the pooled std sqrt((s_a^2 + s_b^2) / 2), and whether the gap
exceeds twice the pooled std (issue 14's criterion). The backbone initialisation of the random
baseline is fixed (its spec's seed); only the fine-tuning seed varies, as for the pretrained side.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

METRIC = {"det": ("bbox", "AP"), "seg": (None, "mIoU")}


def kind_of(task: str) -> str:
    return "det" if task.endswith("_det") else "seg"


def metric(task: str, res: Dict) -> float:
    group, key = METRIC[kind_of(task)]
    return float((res[group] if group else res)[key])


def mean_std(xs: List[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return m, s


def run_one(task: str, spec: str, seed: int, out: Path, extra: List[str]) -> Dict:
    res_file = out / "results.json"
    if not res_file.exists():
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
    lines = ["| task | metric | pretrained (mean ± std) | random init (mean ± std) | gap | pooled std | gap > 2 x pooled std |",
             "|---|---|---|---|---|---|---|"]
    for task in a.tasks.split(","):
        per: Dict[str, List[float]] = {}
        for label, spec in (("pretrained", a.ckpt), ("random_init", a.random)):
            per[label] = [metric(task, run_one(task, spec, s, out / task / label / f"seed{s}", a.overrides))
                          for s in seeds]
        (mp, sp), (mr, sr) = mean_std(per["pretrained"]), mean_std(per["random_init"])
        pooled = math.sqrt((sp ** 2 + sr ** 2) / 2)
        gap = mp - mr
        name = METRIC[kind_of(task)][1]
        summary[task] = {"metric": name, "seeds": seeds, "values": per, "pretrained_mean": mp, "pretrained_std": sp,
                         "random_mean": mr, "random_std": sr, "gap": gap, "pooled_std": pooled,
                         "separated": bool(gap > 2 * pooled)}
        lines.append(f"| {task} | {name} | {mp:.2f} ± {sp:.2f} | {mr:.2f} ± {sr:.2f} | {gap:+.2f} | {pooled:.2f} | "
                     f"{'yes' if gap > 2 * pooled else 'no'} |")
        print(lines[-1], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"ckpt": a.ckpt, "random": a.random, "tasks": summary}, indent=1))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
