"""Report plots drawn with matplotlib (Agg backend) and embedded in the HTML report as inline SVG:
line charts with error bars and a 2-D scatter (PCA). ``*_figure`` builds the matplotlib figure (what
the tests inspect); ``line_chart`` / ``scatter`` return the SVG text that ``probes/report.py`` and
``transfer/demo_report.py`` place in their pages.

The SVG is made self-contained for inlining: no XML prolog or DOCTYPE, no metadata block, text kept
as ``<text>`` (``svg.fonttype = none``) and SVG 2 ``href`` in place of ``xlink:href``, so the page
names no URL but the SVG namespace; ids are seeded (``svg.hashsalt``), so a report is reproducible.
"""
from __future__ import annotations

import io
import re
from typing import Dict, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only, never a window; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

SIZE_IN = (6.4, 3.6)  # figure size in inches (at 72 px/inch: 460 x 260 px, the size of the old plots)
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "transfer-report", "font.size": 9, "axes.grid": True,
         "grid.color": "#dddddd"}
SVG_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}  # no RDF block


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


def line_figure(series: Dict[str, Sequence[Tuple[float, float, float]]], title: str, xlabel: str,
                ylabel: str, logx: bool = False) -> Optional[Figure]:
    """One line (with point markers) per named series of (x, y, y_err) points, error bars where
    y_err > 0, NaN points left out; y is a percentage (the axis stays within 0-100). None when no
    series has a point. ``ax.get_lines()`` holds exactly the series' lines, in order."""
    clean = {name: [(x, y, e) for x, y, e in s if y == y] for name, s in series.items()}
    pts = [p for s in clean.values() for p in s]
    if not pts:
        return None
    with plt.rc_context(STYLE):
        fig = Figure(figsize=SIZE_IN)
        ax = fig.add_subplot()
        for i, (name, s) in enumerate(clean.items()):
            if not s:
                continue
            x, y, e = (np.array(v, dtype=float) for v in zip(*s))
            color = f"C{i % 10}"
            ax.plot(x, y, marker="o", markersize=4, color=color, label=name)
            if (e > 0).any():
                ax.errorbar(x[e > 0], y[e > 0], yerr=e[e > 0], fmt="none", ecolor=color, capsize=0)
        lo = min(p[1] - p[2] for p in pts)
        hi = max(p[1] + p[2] for p in pts)
        y0, y1 = max(0.0, lo - 2), min(100.0, hi + 2)
        ax.set_ylim(y0, y1 if y1 > y0 else y0 + 1)
        xs = sorted({p[0] for p in pts})
        if logx:
            ax.set_xscale("log", base=2)
        if len(xs) <= 8:  # few points: one tick at each, labelled with its value
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
            ax.minorticks_off()
        ax.set_title(title, loc="left", fontweight="bold")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout()
    return fig


def scatter_figure(xy: np.ndarray, labels: np.ndarray, class_names: Optional[Sequence[str]],
                   title: str) -> Optional[Figure]:
    """2-D points coloured by label, one collection (and legend entry) per class, at most 20 in the
    legend; None when there are no points."""
    if xy.shape[0] == 0:
        return None
    labels = np.asarray(labels).astype(int)
    with plt.rc_context(STYLE):
        fig = Figure(figsize=SIZE_IN)
        ax = fig.add_subplot()
        for i, c in enumerate(sorted(set(labels.tolist()))):
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            m = labels == c
            ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.7, color=f"C{c % 10}", linewidths=0,
                       label=str(name) if i < 20 else None)
        ax.set_title(title, loc="left", fontweight="bold")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, markerscale=2)
        fig.tight_layout()
    return fig


def to_svg(fig: Optional[Figure]) -> str:
    """The figure as SVG text to place inside an HTML page ("" for no figure)."""
    if fig is None:
        return ""
    buf = io.StringIO()
    with plt.rc_context(STYLE):
        fig.savefig(buf, format="svg", metadata=SVG_METADATA)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE
    svg = re.sub(r'\s+xmlns:xlink="[^"]*"', "", svg, count=1)
    return svg.replace("xlink:href=", "href=").strip()


def line_chart(series: Dict[str, Sequence[Tuple[float, float, float]]], title: str, xlabel: str,
               ylabel: str, logx: bool = False) -> str:
    """SVG of :func:`line_figure`."""
    return to_svg(line_figure(series, title, xlabel, ylabel, logx))


def scatter(xy: np.ndarray, labels: np.ndarray, class_names: Optional[Sequence[str]], title: str) -> str:
    """SVG of :func:`scatter_figure`."""
    return to_svg(scatter_figure(xy, labels, class_names, title))
