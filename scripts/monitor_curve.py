"""The k-NN monitor of a pretraining run against time: a Markdown table and an SVG plot.

    python scripts/monitor_curve.py runs/fmnist18 --out docs/img/fmnist18_knn_curve.svg [--rate 2.34]

Reads the run's ``log.jsonl`` (the trainer writes one ``knn_top1`` record per monitor pass and the
cumulative training ``time`` every ``log_every`` steps). Minutes are the run's own wall clock; with
``--rate STEPS_PER_S`` a second column gives the minutes the same steps take at that rate (for a run
that shared its cores with other jobs, the rate measured alone is the honest clock; say which).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional

from transfer.demo_report import log_records, monitor_curve


def read_curve(run_dir: Path) -> List[Dict[str, float]]:
    """One row per monitor pass (:func:`transfer.demo_report.monitor_curve`): step, epoch, k-NN top-1
    and the wall minutes at that step (the latest timed step at or before the monitor's)."""
    log = run_dir / "log.jsonl"
    times = {int(r["step"]): float(r["time"]) for r in log_records(log) if "time" in r and "step" in r}
    rows = [{"step": int(r["step"] or 0), "epoch": r["epoch"], "knn": r["knn_top1"], "split": r["split"]}
            for r in monitor_curve(log)]
    for r in rows:
        t = [times[s] for s in times if s <= r["step"]]
        r["minutes"] = max(t) / 60 if t else float("nan")
    return rows


def table(rows: List[Dict[str, float]], rate: Optional[float]) -> str:
    head = "| epoch | step | k-NN monitor (%) | wall minutes |" + (f" minutes at {rate} steps/s |" if rate else "")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [f"{r['epoch']:.0f}", str(r["step"]), f"{r['knn']:.2f}", f"{r['minutes']:.1f}"]
        if rate:
            cells.append(f"{r['step'] / rate / 60:.1f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(rows: List[Dict[str, float]], rate: Optional[float], path: Path, title: str) -> None:
    import matplotlib  # optional: the plot only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["step"] / rate / 60 for r in rows] if rate else [r["minutes"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(x, [r["knn"] for r in rows], marker="o")
    ax.set_xlabel(f"minutes of pretraining ({'at ' + str(rate) + ' steps/s' if rate else 'wall clock'})")
    ax.set_ylabel("k-NN monitor top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg")
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, help="SVG plot path")
    ap.add_argument("--rate", type=float, help="steps/s measured alone, for a second time column")
    a = ap.parse_args(argv)
    rows = read_curve(a.run_dir)
    if not rows:
        raise SystemExit(f"{a.run_dir / 'log.jsonl'} has no k-NN monitor records")
    print(table(rows, a.rate))
    if a.out:
        plot(rows, a.rate, a.out, f"{a.run_dir.name}: k-NN monitor ({rows[0]['split']} split)")
        print(f"plot: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
