"""A self-contained SVG: grouped bars (one group per method, one bar per variant), mean over seeds
with a +-std whisker, dashed lines for the random-init and raw-pixel baselines; one panel per metric."""
from __future__ import annotations

import math
from html import escape
from typing import Any, Dict, List, Optional, Tuple

from .cells import VARIANTS

COLORS = {"orig": "#7f7f7f", "grad": "#4c78a8", "grad_ema": "#f58518"}
BASE_COLORS = {"random init": "#d62728", "raw pixels": "#2ca02c"}


def _nice_ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    span = max(hi - lo, 1e-9)
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi + 1e-9:
        out.append(round(t, 10))
        t += step
    return out


def _panel(table: Dict[str, Any], key: str, title: str, x0: float, y0: float, w: float, h: float) -> Tuple[List[str], bool]:
    rows = table["rows"]
    variants = [v for v in ("orig", "grad", "grad_ema") if v in table["spec"]["variants"]]
    methods: List[str] = []
    for r in rows:
        if r["method"] not in methods:
            methods.append(r["method"])
    val: Dict[Tuple[str, str], Tuple[float, Optional[float]]] = {}
    for r in rows:
        s = r["metrics"].get(key) or {}
        if s.get("mean") is not None:
            val[(r["method"], r["variant"])] = (s["mean"], s.get("std"))
    bases = []
    for b in table.get("baselines", []):
        s = b["metrics"].get(key) or {}
        if s.get("mean") is not None:
            bases.append((b["method"], s["mean"]))
    if not val:
        return [], False
    pts = [m - (sd or 0) for m, sd in val.values()] + [m + (sd or 0) for m, sd in val.values()] + [b for _, b in bases]
    lo = max(0.0, math.floor(min(pts) - 2))
    hi = min(100.0, math.ceil(max(pts) + 1))
    if hi <= lo:
        hi = lo + 1

    def Y(v: float) -> float:
        return y0 + h - (v - lo) / (hi - lo) * h

    el = [f'<text x="{x0 + w / 2:.1f}" y="{y0 - 10:.1f}" text-anchor="middle" font-size="13" font-weight="bold">'
          f'{escape(title)}</text>']
    for t in _nice_ticks(lo, hi):
        yy = Y(t)
        el.append(f'<line x1="{x0:.1f}" y1="{yy:.1f}" x2="{x0 + w:.1f}" y2="{yy:.1f}" stroke="#e5e5e5"/>')
        el.append(f'<text x="{x0 - 6:.1f}" y="{yy + 4:.1f}" text-anchor="end" font-size="10">{t:g}</text>')
    el.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x0:.1f}" y2="{y0 + h:.1f}" stroke="#333"/>')
    el.append(f'<line x1="{x0:.1f}" y1="{y0 + h:.1f}" x2="{x0 + w:.1f}" y2="{y0 + h:.1f}" stroke="#333"/>')
    gw = w / max(1, len(methods))
    bw = min(18.0, (gw - 8) / max(1, len(variants)))
    for i, m in enumerate(methods):
        gx = x0 + i * gw + (gw - bw * len(variants)) / 2
        for j, v in enumerate(variants):
            if (m, v) not in val:
                continue
            mean, sd = val[(m, v)]
            bx = gx + j * bw
            top = Y(mean)
            el.append(f'<rect x="{bx:.1f}" y="{top:.1f}" width="{bw - 1:.1f}" height="{max(0.5, y0 + h - top):.1f}" '
                      f'fill="{COLORS[v]}"><title>{escape(m)} {escape(VARIANTS[v].label)}: {mean:.2f}'
                      f'{"" if sd is None else f" ± {sd:.2f}"}</title></rect>')
            if sd:
                cx = bx + (bw - 1) / 2
                el.append(f'<line x1="{cx:.1f}" y1="{Y(min(hi, mean + sd)):.1f}" x2="{cx:.1f}" '
                          f'y2="{Y(max(lo, mean - sd)):.1f}" stroke="#000" stroke-width="1"/>')
        lx, ly = x0 + i * gw + gw / 2, y0 + h + 12
        el.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="10" text-anchor="end" '
                  f'transform="rotate(-35 {lx:.1f} {ly:.1f})">{escape(m)}</text>')
    for name, v in bases:
        yy = Y(v)
        c = BASE_COLORS.get(name, "#000")
        el.append(f'<line x1="{x0:.1f}" y1="{yy:.1f}" x2="{x0 + w:.1f}" y2="{yy:.1f}" stroke="{c}" '
                  f'stroke-dasharray="5,4" stroke-width="1.2"/>')
        el.append(f'<text x="{x0 + w - 2:.1f}" y="{yy - 3:.1f}" text-anchor="end" font-size="10" fill="{c}">'
                  f'{escape(name)} {v:.1f}</text>')
    return el, True


def bar_chart_svg(table: Dict[str, Any]) -> str:
    n_methods = len({r["method"] for r in table["rows"]})
    variants = [v for v in ("orig", "grad", "grad_ema") if v in table["spec"]["variants"]]
    w = max(420.0, n_methods * (len(variants) * 16 + 16))
    ml, mt, ph, gap = 50.0, 60.0, 220.0, 110.0
    panels = [("linear", "linear top-1 (%)"), ("knn", "k-NN top-1, k=20 (%)")]
    body: List[str] = []
    y = mt
    for key, title in panels:
        el, ok = _panel(table, key, title, ml, y, w, ph)
        if ok:
            body += el
            y += ph + gap
    height = y - gap + 90 if body else 120
    sp = table["spec"]
    head = (f"{sp['data']}: {sp['steps']} steps x batch {sp['batch']}, mean ± std over {sp['seeds']} seed(s)")
    legend = []
    lx = ml
    for v in variants:
        legend.append(f'<rect x="{lx:.1f}" y="28" width="12" height="12" fill="{COLORS[v]}"/>'
                      f'<text x="{lx + 16:.1f}" y="38" font-size="11">{escape(VARIANTS[v].label)}</text>')
        lx += 110
    total_w = w + ml + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {total_w:.0f} {height:.0f}" font-family="sans-serif">',
             '<rect width="100%" height="100%" fill="#fff"/>',
             f'<text x="{ml:.1f}" y="16" font-size="12">{escape(head)}</text>'] + legend + body
    if not body:
        parts.append(f'<text x="{ml:.1f}" y="80" font-size="12">no finished cell yet</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
