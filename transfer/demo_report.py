"""The demo's one report: classification, semi-supervised, detection and segmentation, the
pretrained export beside random init and raw pixels, rendered as Markdown and HTML (with the
k-NN monitor curve) from ``demo_summary.json`` -- the numbers each stage printed, nothing else."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from probes import plots
from probes.report import Section, _f, to_html, to_markdown

from .checkpoint import atomic_write_text

ROWS = (("ssl", "pretrained export"), ("random_init", "random init"), ("raw_pixels", "raw pixels"))


def _result(summary: Dict[str, Any], stage: str) -> Dict[str, Any]:
    return (summary.get(stage) or {}).get("result") or {}


def log_records(log: Path) -> List[Dict[str, Any]]:
    """The JSON objects of a run's log.jsonl, in order; a line cut by a kill is skipped."""
    recs: List[Dict[str, Any]] = []
    for ln in (log.read_text().splitlines() if log.exists() else []):
        try:
            r = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict):
            recs.append(r)
    return recs


def monitor_curve(log: Path) -> List[Dict[str, float]]:
    """``[{epoch, step, knn_top1, split}]`` from the run's log.jsonl (the k-NN monitor's lines)."""
    out: List[Dict[str, float]] = []
    recs = log_records(log)
    # steps per epoch from any line that has both (monitor lines of older logs carry only the step)
    spe = next((r["step"] / r["epoch"] for r in recs if r.get("epoch") and r.get("step")), None)
    for r in recs:
        if r.get("knn_top1") is not None:
            epoch = r.get("epoch") if r.get("epoch") is not None else (r.get("step", 0) / spe if spe else 0.0)
            out.append({"epoch": float(epoch), "step": r.get("step"), "knn_top1": float(r["knn_top1"]),
                        "split": r.get("knn_split", "test")})
    return out


def _pretrain_section(summary: Dict[str, Any], curve: List[Dict[str, float]]) -> Section:
    pre = summary.get("pretrain") or {}
    res = pre.get("result") or {}
    b = res.get("budget") or {}
    lines = [f"{b.get('method', '?')}, {b.get('arch', '?')} x{b.get('width', '?')} at {b.get('size', '?')} px: "
             f"{b.get('epochs', '?')} epochs = {b.get('images', 0):,} images in {pre.get('seconds', '?')} s."]
    s = Section("Pretraining", lines)
    if curve:
        split = curve[-1]["split"]
        s.lines.append(f"k-NN monitor (k=20, 10,000-image bank; queries: {'a 5,000-image validation split of train' if split == 'val' else 'the test split'}) by epoch.")
        s.header = ["epoch", "k-NN monitor top-1 %"]
        s.rows = [[f"{p['epoch']:.2f}", _f(p["knn_top1"])] for p in curve]
        s.svg = plots.line_chart({"k-NN monitor": [(p["epoch"], p["knn_top1"], 0.0) for p in curve]},
                                 "k-NN monitor during pretraining", "epoch", "top-1 (%)")
    return s


def _classification_section(summary: Dict[str, Any]) -> Section:
    knn, probe, ft = _result(summary, "knn"), _result(summary, "probe"), _result(summary, "finetune")
    s = Section("Classification (Fashion-MNIST test set)",
                ["k-NN: DINO vote, T 0.07, 60,000-image bank. Linear: logistic regression on frozen features, "
                 "L2 chosen on a validation split of train. Few-shot: 600 5-way episodes on the test split. "
                 "1 % fine-tune: the whole backbone + a linear head on 600 class-balanced labelled images "
                 "(raw pixels: logistic regression on the same 600 images)."],
                ["features", "k-NN k=20", "linear", "5-way 1-shot", "5-way 5-shot", "1 % labels fine-tune"])
    ftkey = {"ssl": "finetune_pretrained_top1", "random_init": "finetune_random_top1", "raw_pixels": "finetune_pixels_top1"}
    for key, label in ROWS:
        p = probe.get(key) or {}
        s.rows.append([label, _f((knn.get(key) or {}).get("knn_top1_k20", p.get("knn_top1_k20"))), _f(p.get("linear_top1")),
                       _f(p.get("fewshot_5way_1shot_proto")), _f(p.get("fewshot_5way_5shot_proto")),
                       _f(ft.get(ftkey[key]))])
    return s


def _task_section(summary: Dict[str, Any], stage: str, heading: str, metrics: List[str]) -> Section:
    res = _result(summary, stage)
    s = Section(heading, ["Fine-tuned from the pretrained export and from random init with the same schedule "
                          "(raw pixels do not apply)."], ["task", "backbone"] + metrics)
    for task, r in res.items():
        if not isinstance(r, dict):
            continue
        for key, label in ROWS[:2]:
            row = r.get(key) or {}
            s.rows.append([task, label] + [_f(row.get(m)) for m in metrics])
    return s


def build_demo_sections(summary: Dict[str, Any], log: Path) -> List[Section]:
    secs = [_pretrain_section(summary, monitor_curve(log)), _classification_section(summary)]
    if _result(summary, "det"):
        secs.append(_task_section(summary, "det", "Detection (box AP, COCO evaluation)", ["bbox_AP", "bbox_AP50", "bbox_AP75"]))
    if _result(summary, "seg"):
        secs.append(_task_section(summary, "seg", "Segmentation", ["mIoU", "aAcc", "mAcc"]))
    timing = [[k, v.get("seconds")] for k, v in summary.items() if isinstance(v, dict) and "seconds" in v]
    secs.append(Section("Time per stage", ["Seconds on this machine (CPU)."], ["stage", "seconds"], timing))
    return secs


def write_demo_report(out: Path, summary: Dict[str, Any], log: Path) -> Dict[str, Path]:
    secs = build_demo_sections(summary, log)
    title = "transfer demo: what pretraining buys on Fashion-MNIST (CPU)"
    paths = {"md": Path(out) / "report.md", "html": Path(out) / "report.html"}
    atomic_write_text(paths["md"], to_markdown(title, secs) + "\n")
    atomic_write_text(paths["html"], to_html(title, secs) + "\n")
    return paths
