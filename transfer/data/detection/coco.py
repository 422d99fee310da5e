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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _check_segmentation(seg, where: str) -> None:
    """Polygons ``[[x1, y1, x2, y2, ...], ...]`` (>= 3 points each) or RLE ``{"counts", "size": [h, w]}``."""
    if seg is None or seg == []:
        return
    if isinstance(seg, list):
        for j, poly in enumerate(seg):
            if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                    or not all(_is_num(v) for v in poly)):
                raise UserError(f"{where}: segmentation polygon {j} is not a list of >= 3 (x, y) number pairs")
        return
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
            raise UserError(f"{where}: segmentation RLE 'size' is {size!r}, expected [height, width]")
        if isinstance(counts, list):
            if not all(_is_int(v) and v >= 0 for v in counts) or sum(counts) != size[0] * size[1]:
                raise UserError(f"{where}: segmentation RLE 'counts' is not a list of run lengths summing to height*width")
        elif not isinstance(counts, str):
            raise UserError(f"{where}: segmentation RLE 'counts' is {type(counts).__name__}, expected a string or a list")
        return
    raise UserError(f"{where}: segmentation is {type(seg).__name__}, expected polygons (a list) or RLE (an object)")


def _check_coco(d: dict, json_path: Path) -> None:
    """The structure and types the reader relies on; every fault names the file, record and key."""
    for k in ("images", "annotations", "categories"):
        if not isinstance(d[k], list):
            raise UserError(f"{json_path}: '{k}' is {type(d[k]).__name__ if d[k] is not None else 'null'}, expected a list")
    for i, c in enumerate(d["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            raise UserError(f"{json_path}: categories[{i}] has {'id ' + repr(c.get('id')) if isinstance(c, dict) and 'id' in c else 'no id'}"
                            f"; expected an integer 'id'")
    for i, im in enumerate(d["images"]):
        if not isinstance(im, dict):
            raise UserError(f"{json_path}: images[{i}] is {type(im).__name__}, expected an object")
        if not _is_int(im.get("id")):
            raise UserError(f"{json_path}: images[{i}] has {'id ' + repr(im['id']) if 'id' in im else 'no id'}; expected an integer 'id'")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise UserError(f"{json_path}: image id {im['id']} has {'file_name ' + repr(im['file_name']) if 'file_name' in im else 'no file_name'}; "
                            "expected a string")
        for k in ("width", "height"):
            if k in im and not _is_num(im[k]):
                raise UserError(f"{json_path}: image id {im['id']} has {k} {im[k]!r}; expected a number")
    for i, a in enumerate(d["annotations"]):
        if not isinstance(a, dict):
            raise UserError(f"{json_path}: annotations[{i}] is {type(a).__name__}, expected an object")
        where = f"{json_path}: annotation id {a.get('id', f'#{i}')}"
        for k in ("image_id", "category_id"):
            if not _is_int(a.get(k)):
                raise UserError(f"{where} has {k} {a.get(k)!r}; expected an integer")
        if "area" in a and not _is_num(a["area"]):
            raise UserError(f"{where} has area {a['area']!r}; expected a number")
        if "iscrowd" in a and a["iscrowd"] not in (0, 1):
            raise UserError(f"{where} has iscrowd {a['iscrowd']!r}; expected 0 or 1")
        _check_segmentation(a.get("segmentation"), where)


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
    _check_coco(d, json_path)
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
