"""The segmentation report: ``report.md`` and ``report.html`` (metrics, per-class table) with a few
validation images drawn by matplotlib as image | true mask | predicted mask. The pages are
assembled here; the drawing is matplotlib's."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..checkpoint import atomic_write, atomic_write_text
from ..data.segmentation import VOC_PALETTE

DPI = 100
IGNORE_COLOUR = (224, 224, 192)  # VOC's "ignore" (255) colour


def colour(mask: np.ndarray) -> np.ndarray:
    """Class ids -> RGB with the VOC palette (255, ignore, pale)."""
    pal = np.array(VOC_PALETTE, dtype=np.uint8).reshape(256, 3).copy()
    pal[255] = IGNORE_COLOUR
    return pal[np.clip(mask, 0, 255).astype(np.int64)]


def save_triptych(path: Path, img: np.ndarray, true: np.ndarray, pred: np.ndarray, min_side: int = 160) -> None:
    """image | true mask | predicted mask side by side, each panel at least ``min_side`` px high."""
    # matplotlib costs about half a second to import: only when a report is drawn
    from matplotlib.figure import Figure

    h, w = true.shape
    k = max(1, int(np.ceil(min_side / max(1, min(h, w)))))
    fig = Figure(figsize=(3 * w * k / DPI, (h * k + 18) / DPI), dpi=DPI)
    for i, (title, panel) in enumerate((("image", img), ("true", colour(true)), ("predicted", colour(pred)))):
        ax = fig.add_axes((i / 3 + 0.005, 0, 1 / 3 - 0.01, h * k / (h * k + 18)))
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(title, fontsize=8, pad=2)
        ax.set_axis_off()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def write_report(out_dir: Path, res: Dict[str, Any], samples: List[tuple]) -> None:
    out_dir = Path(out_dir)
    images = []
    for i, (img, true, pred, name) in enumerate(samples):
        rel = f"report/{i:02d}_{name}.png"
        save_triptych(out_dir / rel, img, true, pred)
        images.append((rel, name))
    src = res.get("ckpt", {})
    lines = [f"# {res['task']}: segmentation transfer", "",
             f"- backbone: `{src.get('spec')}` (sha256 {str(src.get('weights_sha256'))[:16]}...)",
             f"- engine: {res['engine']}, head: {res['settings'].get('head')}, iterations: {res.get('iters')}"
             f"/{res.get('max_iter')}, batch {res['settings'].get('batch_size')}, crop {res['settings'].get('crop_size')}",
             f"- evaluation: {res['settings'].get('test_mode')} inference on {res.get('num_val_images')} validation images",
             "", "| metric | value |", "|---|---|",
             f"| mIoU | {_fmt(res.get('mIoU'))} |", f"| pixel accuracy (aAcc) | {_fmt(res.get('aAcc'))} |",
             f"| mAcc | {_fmt(res.get('mAcc'))} |", "", "| class | IoU | Acc |", "|---|---|---|"]
    for c, v in res["per_class_iou"].items():
        lines.append(f"| {c} | {_fmt(v)} | {_fmt(res['per_class_acc'].get(c))} |")
    lines += ["", "Each picture: image | true mask | predicted mask (255 = ignore, pale).", ""]
    lines += [f"![{n}]({rel})" for rel, n in images]
    atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    rows = "".join(f"<tr><td>{html.escape(c)}</td><td>{_fmt(v)}</td><td>{_fmt(res['per_class_acc'].get(c))}</td></tr>"
                   for c, v in res["per_class_iou"].items())
    figs = "".join(f"<figure><img src='{html.escape(rel)}'><figcaption>{html.escape(n)}: image | true | predicted"
                   f"</figcaption></figure>" for rel, n in images)
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(res['task'])}</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;border-bottom:1px solid #ddd}}"
            f"img{{image-rendering:pixelated}}</style>"
            f"<h1>{html.escape(res['task'])}: segmentation transfer</h1>"
            f"<p>backbone <code>{html.escape(str(src.get('spec')))}</code>, engine {html.escape(res['engine'])}, "
            f"head {html.escape(str(res['settings'].get('head')))}, {res.get('iters')}/{res.get('max_iter')} iterations</p>"
            f"<p><b>mIoU {_fmt(res.get('mIoU'))}</b> &middot; aAcc {_fmt(res.get('aAcc'))} &middot; mAcc {_fmt(res.get('mAcc'))}</p>"
            f"<table><tr><th>class</th><th>IoU</th><th>Acc</th></tr>{rows}</table>{figs}")
    atomic_write_text(out_dir / "report.html", page)
