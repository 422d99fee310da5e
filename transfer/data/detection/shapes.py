"""Synthetic ``shapes_det``: squares, disks and triangles on textured backgrounds, written to disk
in COCO-json and in Pascal-VOC layouts, so tests and the demo exercise the readers exactly as a
user's dataset would (``../shared/docs/data.md``, "Synthetic data"). Deterministic per seed.

The COCO category ids are 1, 3 and 7 on purpose: real COCO's ids have gaps too.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import numpy as np
from PIL import Image, ImageDraw

from transfer.checkpoint import atomic_write_text

SHAPE_CLASSES = ("square", "disk", "triangle")
SHAPE_CAT_IDS = (1, 3, 7)


def _polygon(kind: str, cx: float, cy: float, r: float) -> List[float]:
    if kind == "square":
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif kind == "triangle":
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    else:
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
    return [float(round(v, 2)) for p in pts for v in p]


def make_image(rng: np.random.RandomState, size: int, max_shapes: int = 3):
    """One RGB image (PIL) and its objects ``[{"cls", "poly", "box"}]`` (box xyxy, pixels)."""
    # Texture: a smooth colour gradient plus blocky noise, so the background is not trivially flat.
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    base = rng.uniform(40, 140, 3)
    grad = rng.uniform(-60, 60, (2, 3))
    img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    noise = rng.uniform(-25, 25, (size // 8 + 1, size // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:size, :size]
    img = np.clip(img + noise + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    objs = []
    for _ in range(rng.randint(1, max_shapes + 1)):
        k = rng.randint(len(SHAPE_CLASSES))
        r = rng.uniform(size * 0.08, size * 0.2)
        cx, cy = rng.uniform(r, size - r, 2)
        poly = _polygon(SHAPE_CLASSES[k], cx, cy, r)
        color = tuple(int(v) for v in rng.randint(150, 256, 3)) if k != 1 else tuple(int(v) for v in rng.randint(0, 90, 3))
        draw.polygon(list(zip(poly[0::2], poly[1::2])), fill=color)
        xs, ys = poly[0::2], poly[1::2]
        objs.append({"cls": k, "poly": poly, "box": [min(xs), min(ys), max(xs), max(ys)]})
    return pil, objs


def write_shapes_coco(root, splits: Mapping[str, int], size: int = 96, seed: int = 0,
                      ann_name: str = "instances_{split}.json") -> Dict[str, Path]:
    """COCO layout: ``root/annotations/instances_<split>.json`` and ``root/<split>/*.png``.
    Returns ``{split: json path}``."""
    root = Path(root)
    out = {}
    for si, (split, n) in enumerate(splits.items()):
        rng = np.random.RandomState(seed * 1000 + si)
        (root / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(n):
            pil, objs = make_image(rng, size)
            fn = f"{split}_{i:05d}.png"
            pil.save(root / split / fn)
            images.append({"id": i + 1, "file_name": fn, "width": size, "height": size})
            for o in objs:
                x0, y0, x1, y1 = o["box"]
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": SHAPE_CAT_IDS[o["cls"]],
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": _poly_area(o["poly"]), "iscrowd": 0,
                             "segmentation": [o["poly"]]})
        cats = [{"id": c, "name": nme, "supercategory": "shape"} for c, nme in zip(SHAPE_CAT_IDS, SHAPE_CLASSES)]
        p = root / "annotations" / ann_name.format(split=split)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, json.dumps({"images": images, "annotations": anns, "categories": cats}))
        out[split] = p
    return out


def _poly_area(poly: List[float]) -> float:
    xs, ys = np.asarray(poly[0::2]), np.asarray(poly[1::2])
    return float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def voc_xml(filename: str, width: int, height: int, objects: List[dict]) -> str:
    """A Pascal-VOC annotation; ``objects``: ``{"name", "box" (0-based xyxy), "difficult"}``."""
    parts = [f"<annotation><folder>VOC</folder><filename>{filename}</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size><segmented>0</segmented>"]
    for o in objects:
        x0, y0, x1, y1 = o["box"]
        parts.append(f"<object><name>{o['name']}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>{int(o.get('difficult', 0))}</difficult><bndbox><xmin>{int(round(x0)) + 1}</xmin>"
                     f"<ymin>{int(round(y0)) + 1}</ymin><xmax>{int(round(x1))}</xmax><ymax>{int(round(y1))}</ymax></bndbox></object>")
    parts.append("</annotation>\n")
    return "\n".join(parts)


def write_shapes_voc(root, years: Optional[Mapping[str, Mapping[str, int]]] = None, size: int = 96, seed: int = 0) -> Path:
    """VOC layout: ``root/VOC<year>/{JPEGImages/*.jpg, Annotations/*.xml, ImageSets/Main/<set>.txt}``.
    ``years`` e.g. ``{"2007": {"trainval": 8, "test": 4}, "2012": {"trainval": 4}}``."""
    root = Path(root)
    years = years or {"2007": {"trainval": 8, "test": 4}}
    for yi, (year, sets) in enumerate(years.items()):
        d = root / f"VOC{year}"
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for si, (sub, n) in enumerate(sets.items()):
            rng = np.random.RandomState(seed * 1000 + yi * 100 + si)
            ids = []
            for i in range(n):
                pil, objs = make_image(rng, size)
                iid = f"{year}_{sub}_{i:05d}"
                pil.save(d / "JPEGImages" / f"{iid}.jpg", quality=95)
                atomic_write_text(d / "Annotations" / f"{iid}.xml", voc_xml(
                    f"{iid}.jpg", size, size, [{"name": SHAPE_CLASSES[o["cls"]], "box": o["box"]} for o in objs]))
                ids.append(iid)
            atomic_write_text(d / "ImageSets" / "Main" / f"{sub}.txt", "\n".join(ids) + "\n")
    return root
