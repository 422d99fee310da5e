"""Dependency-free inline SVG plots for the HTML report: line charts and a 2-D scatter (PCA)."""
from __future__ import annotations

import html
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 460, 300, 55, 120, 30, 45


def pca_2d(feats: torch.Tensor, max_points: int = 2000, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Project (a seeded subsample of) features on their top-2 principal axes. Returns (xy, idx)."""
    n = feats.shape[0]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:max_points].sort().values if n > max_points else torch.arange(n)
    x = feats[idx].double()
    x = x - x.mean(0)
    if x.shape[0] < 2 or float(x.abs().max()) == 0:
        return np.zeros((x.shape[0], 2)), idx.numpy()
    _, _, vt = torch.linalg.svd(x, full_matrices=False)
    xy = (x @ vt[:2].T).numpy()
    if xy.shape[1] < 2:
        xy = np.concatenate([xy, np.zeros((xy.shape[0], 1))], 1)
    return xy, idx.numpy()


def _ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _frame(title: str, xlabel: str, ylabel: str) -> List[str]:
    e = html.escape
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
            f'font-family="sans-serif" font-size="11">',
            f'<rect width="{W}" height="{H}" fill="white"/>',
            f'<text x="{PAD_L}" y="18" font-size="13" font-weight="bold">{e(title)}</text>',
            f'<text x="{PAD_L + (W - PAD_L - PAD_R) / 2}" y="{H - 8}" text-anchor="middle">{e(xlabel)}</text>',
            f'<text x="14" y="{PAD_T + (H - PAD_T - PAD_B) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 14 {PAD_T + (H - PAD_T - PAD_B) / 2})">{e(ylabel)}</text>']


def line_chart(series: Dict[str, Sequence[Tuple[float, float, float]]], title: str, xlabel: str,
               ylabel: str, logx: bool = False) -> str:
    """SVG of named series of (x, y, y_err) points; error bars drawn when y_err > 0."""
    pts = [(x, y, e) for s in series.values() for x, y, e in s if y == y]
    if not pts:
        return ""
    fx = (lambda v: math.log2(v)) if logx else (lambda v: v)
    xs = [fx(p[0]) for p in pts]
    ys = [p[1] - p[2] for p in pts] + [p[1] + p[2] for p in pts]
    x0, x1 = min(xs), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1
    y0, y1 = max(0.0, min(ys) - 2), min(100.0, max(ys) + 2)
    y1 = y1 if y1 > y0 else y0 + 1
    sx = lambda v: PAD_L + (fx(v) - x0) / (x1 - x0) * (W - PAD_L - PAD_R)
    sy = lambda v: H - PAD_B - (v - y0) / (y1 - y0) * (H - PAD_T - PAD_B)
    out = _frame(title, xlabel, ylabel)
    out.append(f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="black"/>')
    out.append(f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="black"/>')
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{PAD_L - 4}" y1="{sy(t):.1f}" x2="{W - PAD_R}" y2="{sy(t):.1f}" stroke="#ddd"/>'
                   f'<text x="{PAD_L - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for xv in sorted({p[0] for p in pts}):
        out.append(f'<text x="{sx(xv):.1f}" y="{H - PAD_B + 15}" text-anchor="middle">{xv:g}</text>')
    for i, (name, s) in enumerate(series.items()):
        c = PALETTE[i % len(PALETTE)]
        s = [p for p in s if p[1] == p[1]]
        if not s:
            continue
        path = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y, _) in enumerate(s))
        out.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y, e in s:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"><title>{html.escape(name)}: '
                       f'{x:g} -> {y:.2f}</title></circle>')
            if e > 0:
                out.append(f'<line x1="{sx(x):.1f}" y1="{sy(y - e):.1f}" x2="{sx(x):.1f}" y2="{sy(y + e):.1f}" stroke="{c}"/>')
        ly = PAD_T + 14 * i + 10
        out.append(f'<rect x="{W - PAD_R + 10}" y="{ly - 8}" width="10" height="10" fill="{c}"/>'
                   f'<text x="{W - PAD_R + 24}" y="{ly + 1}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def scatter(xy: np.ndarray, labels: np.ndarray, class_names: Optional[Sequence[str]], title: str) -> str:
    """SVG scatter of 2-D points coloured by label (legend of class names)."""
    if xy.shape[0] == 0:
        return ""
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    sx = lambda v: PAD_L + (v - lo[0]) / span[0] * (W - PAD_L - PAD_R)
    sy = lambda v: H - PAD_B - (v - lo[1]) / span[1] * (H - PAD_T - PAD_B)
    out = _frame(title, "PC 1", "PC 2")
    for (a, b), y in zip(xy, labels):
        out.append(f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="1.8" fill="{PALETTE[int(y) % len(PALETTE)]}" '
                   f'fill-opacity="0.7"/>')
    for i, c in enumerate(sorted(set(int(v) for v in labels))[:20]):
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        ly = PAD_T + 13 * i + 10
        out.append(f'<rect x="{W - PAD_R + 10}" y="{ly - 8}" width="9" height="9" fill="{PALETTE[c % len(PALETTE)]}"/>'
                   f'<text x="{W - PAD_R + 23}" y="{ly}">{html.escape(str(name))}</text>')
    out.append("</svg>")
    return "\n".join(out)
