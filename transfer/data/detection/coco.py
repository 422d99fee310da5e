"""COCO-json reader: ``instances_*.json`` + an image folder -> :class:`DetSplit`.

Follows detectron2 ``data/datasets/coco.py`` (``load_coco_json``): category ids are mapped to
contiguous labels in sorted id order (gaps allowed, as in COCO's 1..90), boxes are ``xywh`` in
the file and ``xyxy`` here, ``iscrowd`` boxes are kept for evaluation only. Where detectron2
asserts, this reader names the file and the record: an image that is missing on disk, an
annotation of an undeclared category or of an unknown image, a malformed file. Degenerate boxes
(zero or negative width/height, not finite) are dropped and counted, not fatal.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from transfer.errors import UserError

from .records import DetImage, DetSplit, clean_box


def read_coco(json_path, image_root, name: Optional[str] = None, check_files: bool = True) -> DetSplit:
    json_path, image_root = Path(json_path), Path(image_root)
    if not json_path.is_file():
        raise UserError(f"COCO annotation file not found: {json_path}")
    try:
        d = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{json_path}: not valid JSON ({e})") from None
    if not isinstance(d, dict) or not all(k in d for k in ("images", "annotations", "categories")):
        raise UserError(f"{json_path}: not a COCO instances file (needs keys 'images', 'annotations', 'categories')")
    cats = sorted(d["categories"], key=lambda c: c["id"])
    if not cats:
        raise UserError(f"{json_path}: 'categories' is empty")
    cat_ids = [int(c["id"]) for c in cats]
    if len(set(cat_ids)) != len(cat_ids):
        dup = sorted({i for i in cat_ids if cat_ids.count(i) > 1})
        raise UserError(f"{json_path}: category ids repeated: {dup}")
    contiguous = {cid: k + 1 for k, cid in enumerate(cat_ids)}  # gaps (e.g. COCO's 1..90) are fine
    by_image: Dict[int, List[dict]] = defaultdict(list)
    image_ids = {int(im["id"]) for im in d["images"]}
    for a in d["annotations"]:
        if int(a.get("image_id", -1)) not in image_ids:
            raise UserError(f"{json_path}: annotation id {a.get('id')} refers to image_id {a.get('image_id')}, "
                            "which is not in 'images'")
        if int(a.get("category_id", -1)) not in contiguous:
            raise UserError(f"{json_path}: annotation id {a.get('id')} (image_id {a['image_id']}) has category_id "
                            f"{a.get('category_id')}, not declared in 'categories' (declared: {cat_ids})")
        by_image[int(a["image_id"])].append(a)
    dropped = {"degenerate boxes": 0}
    images: List[DetImage] = []
    has_masks = False
    for im in sorted(d["images"], key=lambda r: int(r["id"])):
        f = image_root / im["file_name"]
        if check_files and not f.is_file():
            raise UserError(f"{json_path}: image id {im['id']} has file_name {im['file_name']!r}, not found at {f}")
        w, h = int(im.get("width", 0)), int(im.get("height", 0))
        if w <= 0 or h <= 0:
            raise UserError(f"{json_path}: image id {im['id']} ({im['file_name']}) has no positive width/height")
        boxes, labels, crowd, areas, segms = [], [], [], [], []
        for a in by_image.get(int(im["id"]), []):
            bb = a.get("bbox")
            box = None
            if isinstance(bb, (list, tuple)) and len(bb) == 4 and all(isinstance(v, (int, float)) for v in bb):
                box = clean_box([bb[0], bb[1], bb[0] + bb[2], bb[1] + bb[3]], w, h)
            if box is None:
                dropped["degenerate boxes"] += 1
                continue
            boxes.append(box)
            labels.append(contiguous[int(a["category_id"])])
            crowd.append(bool(a.get("iscrowd", 0)))
            areas.append(float(a["area"]) if "area" in a else (box[2] - box[0]) * (box[3] - box[1]))
            seg = a.get("segmentation")
            has_masks = has_masks or bool(seg)
            segms.append(seg if seg else None)
        images.append(DetImage(
            file=str(f), width=w, height=h, image_id=int(im["id"]),
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
            crowd=np.asarray(crowd, bool), areas=np.asarray(areas, np.float32), segms=segms,
        ))
    names = [str(c.get("name", c["id"])) for c in cats]
    return DetSplit(name or json_path.stem, str(json_path), images, names, cat_ids, dropped, has_masks, "coco")
