"""The detection report: ``results.json`` beside ``report.md`` and ``report.html``, with a few
held-out images drawn (matplotlib) with true boxes (green) and predicted boxes (red, score shown).
The pages are assembled here; the drawing is matplotlib's."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
from PIL import Image

from transfer.checkpoint import atomic_write, atomic_write_text

from .det_eval import METRIC_KEYS

DPI = 100
TRUE_COLOUR, PRED_COLOUR = "#00e600", "#ff2828"


def draw_images(split, dets: Sequence[dict], out_dir: Path, n: int = 4, score_thresh: float = 0.5,
                max_pred: int = 100) -> List[Path]:
    """PNG files of the first ``n`` images of ``split`` with true boxes (green) and predicted boxes
    (red, score above), drawn with matplotlib; small images are shown at least 256 px wide."""
    # matplotlib costs about half a second to import: only when a report is drawn
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    by_img: Dict[int, List[dict]] = {}
    for d in dets:
        by_img.setdefault(d["image_id"], []).append(d)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for im in split.images[:n]:
        with Image.open(im.file) as pil:
            pixels = np.asarray(pil.convert("RGB"))
        h, w = pixels.shape[:2]
        scale = max(1, int(math.ceil(256 / max(h, w))))  # tiny test images: upscale so boxes read
        fig = Figure(figsize=(w * scale / DPI, h * scale / DPI), dpi=DPI)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(pixels, interpolation="nearest")
        ax.set_axis_off()
        for x0, y0, x1, y1 in im.boxes:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=TRUE_COLOUR, linewidth=1.5))
        preds = sorted(by_img.get(im.image_id, []), key=lambda d: -d["score"])
        for d in [d for d in preds if d["score"] >= score_thresh][:max_pred]:
            x, y, bw, bh = d["bbox"]
            ax.add_patch(Rectangle((x, y), bw, bh, fill=False, edgecolor=PRED_COLOUR, linewidth=1.5))
            ax.text(x + 1, y + 1, f"{d['score']:.2f}", color=PRED_COLOUR, fontsize=7, va="top")
        p = out_dir / f"{Path(im.file).stem}.png"
        atomic_write(p, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
        paths.append(p)
    return paths


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def write_report(out_dir: Path, results: Dict[str, Any], split, dets: Sequence[dict], n_images: int = 4,
                 score_thresh: float = 0.5) -> Dict[str, str]:
    out_dir = Path(out_dir)
    imgs = draw_images(split, dets, out_dir / "report_images", n_images, score_thresh) if n_images else []
    rows = []
    for kind in ("bbox", "segm"):
        if kind in results:
            rows.append((kind, [results[kind].get(k) for k in METRIC_KEYS]))
    md = [f"# Detection transfer: {results.get('task')}", "",
          f"- checkpoint: `{results.get('ckpt', {}).get('spec')}` (sha256 {str(results.get('ckpt', {}).get('weights_sha256'))[:16]})",
          f"- engine: {results.get('engine')}; model: {json.dumps(results.get('model', {}).get('arch'))} "
          f"head {results.get('model', {}).get('head')}, norm {results.get('model', {}).get('norm')}",
          f"- schedule: {json.dumps(results.get('schedule'))}",
          f"- train: {json.dumps(results.get('data', {}).get('train'))}",
          f"- test: {json.dumps(results.get('data', {}).get('test'))}", "",
          "| | " + " | ".join(METRIC_KEYS) + " |", "|---|" + "---|" * len(METRIC_KEYS)]
    md += [f"| {k} | " + " | ".join(_fmt(v) for v in vals) + " |" for k, vals in rows]
    if "voc07_AP50" in results:
        md += ["", f"VOC07 11-point AP50: {_fmt(results['voc07_AP50'])}"]
    md += ["", f"Images: true boxes green, predictions with score >= {score_thresh} red.", ""]
    md += [f"![{p.stem}](report_images/{p.name})" for p in imgs]
    atomic_write_text(out_dir / "report.md", "\n".join(md) + "\n")
    table = "".join(f"<tr><th>{k}</th>" + "".join(f"<td>{_fmt(v)}</td>" for v in vals) + "</tr>" for k, vals in rows)
    body = (f"<h1>Detection transfer: {html.escape(str(results.get('task')))}</h1>"
            f"<p>checkpoint <code>{html.escape(str(results.get('ckpt', {}).get('spec')))}</code>, engine "
            f"{html.escape(str(results.get('engine')))}</p><pre>{html.escape(json.dumps(results.get('schedule'), indent=1))}</pre>"
            f"<table border=1 cellpadding=4><tr><th></th>" + "".join(f"<th>{k}</th>" for k in METRIC_KEYS) + f"</tr>{table}</table>"
            + (f"<p>VOC07 11-point AP50: {_fmt(results['voc07_AP50'])}</p>" if "voc07_AP50" in results else "")
            + f"<p>True boxes green, predictions with score &ge; {score_thresh} red.</p>"
            + "".join(f'<img src="report_images/{p.name}" style="max-width:45%;margin:4px">' for p in imgs))
    atomic_write_text(out_dir / "report.html", f"<!doctype html><html><head><meta charset='utf-8'><title>"
                      f"{html.escape(str(results.get('task')))}</title></head><body>{body}</body></html>\n")
    return {"markdown": str(out_dir / "report.md"), "html": str(out_dir / "report.html"),
            "images": [str(p) for p in imgs]}
