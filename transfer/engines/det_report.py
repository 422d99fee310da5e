"""The detection report: ``results.json`` beside ``report.md`` and ``report.html``, with a few
held-out images drawn with true boxes (green) and predicted boxes (red, score shown)."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence

from transfer.checkpoint import atomic_write_text

from .det_eval import METRIC_KEYS


def draw_images(split, dets: Sequence[dict], out_dir: Path, n: int = 4, score_thresh: float = 0.5,
                max_pred: int = 100) -> List[Path]:
    """PNG files of the first ``n`` images of ``split`` with true and predicted boxes."""
    from PIL import Image, ImageDraw

    by_img: Dict[int, List[dict]] = {}
    for d in dets:
        by_img.setdefault(d["image_id"], []).append(d)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for im in split.images[:n]:
        with Image.open(im.file) as pil:
            canvas = pil.convert("RGB")
        scale = max(1, int(math.ceil(256 / max(canvas.size))))  # tiny test images: upscale so boxes read
        if scale > 1:
            canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
        dr = ImageDraw.Draw(canvas)
        for b, lab in zip(im.boxes, im.labels):
            dr.rectangle([float(v) * scale for v in b], outline=(0, 230, 0), width=2)
        preds = sorted(by_img.get(im.image_id, []), key=lambda d: -d["score"])
        shown = [d for d in preds if d["score"] >= score_thresh][:max_pred]
        for d in shown:
            x, y, w, h = (v * scale for v in d["bbox"])
            dr.rectangle([x, y, x + w, y + h], outline=(255, 40, 40), width=2)
            dr.text((x + 2, y + 1), f"{d['score']:.2f}", fill=(255, 40, 40))
        p = out_dir / f"{Path(im.file).stem}.png"
        canvas.save(p)
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
