"""Pascal VOC reader: ``VOCdevkit/VOC{year}/{Annotations,JPEGImages,ImageSets/Main}`` -> :class:`DetSplit`.

Follows detectron2 ``data/datasets/pascal_voc.py`` (``load_voc_instances``): one XML per image,
boxes made 0-based by subtracting 1 from ``xmin``/``ymin``, ``difficult`` boxes kept for
evaluation only (ignored there, as in VOC's devkit). A split spec joins year/set pairs with
``+``: ``2007_trainval+2012_trainval`` (VOC07+12, MoCo's ``voc_2007_trainval, voc_2012_trainval``)
or ``2007_test``. Classes are VOC's 20 unless the annotations name others (then their sorted
set, from the training split, so train and test agree).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from transfer.errors import UserError

from .records import DetImage, DetSplit, clean_box

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def parse_voc_xml(xml_path: Path) -> Tuple[dict, List[dict]]:
    """(``{"filename", "width", "height"}``, ``[{"name", "box" (VOC 1-based xyxy), "difficult"}]``)."""
    try:
        root = ET.parse(str(xml_path)).getroot()
    except (ET.ParseError, OSError) as e:
        raise UserError(f"{xml_path}: cannot parse VOC annotation ({e})") from None
    size = root.find("size")
    info = {"filename": root.findtext("filename", "")}
    for k in ("width", "height"):
        raw = (size.findtext(k) or "0").strip() if size is not None else "0"
        try:
            v = float(raw)
        except ValueError:
            v = float("nan")
        if not np.isfinite(v) or v != int(v):
            raise UserError(f"{xml_path}: <size><{k}> is {raw!r}, not a whole number of pixels")
        info[k] = int(v)
    objs = []
    for i, o in enumerate(root.findall("object")):
        bb = o.find("bndbox")
        try:
            box = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")] if bb is not None else None
        except (TypeError, ValueError):
            box = None
        objs.append({"index": i, "name": (o.findtext("name") or "").strip(), "box": box,
                     "difficult": (o.findtext("difficult") or "0").strip() == "1"})
    return info, objs


def voc_records(xml_files: Sequence[Path], image_files: Sequence[Path], classes: Sequence[str], source: str,
                name: str, first_id: int = 0, dropped: Optional[Dict[str, int]] = None) -> List[DetImage]:
    """XML files (and their image files) -> :class:`DetImage` list with contiguous labels."""
    cls_index = {c: k + 1 for k, c in enumerate(classes)}
    dropped = dropped if dropped is not None else {}
    dropped.setdefault("degenerate boxes", 0)
    out = []
    for n, (xml, img) in enumerate(zip(xml_files, image_files)):
        if not img.is_file():
            raise UserError(f"{xml}: image {img.name} not found at {img}")
        info, objs = parse_voc_xml(xml)
        w, h = info["width"], info["height"]
        if w <= 0 or h <= 0:
            try:
                with Image.open(img) as im:
                    w, h = im.size
            except (OSError, ValueError, Image.DecompressionBombError) as e:  # not an image, truncated, bomb
                raise UserError(f"{xml}: no <size> in the annotation and {img} cannot be read as an image "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})") from None
        boxes, labels, crowd = [], [], []
        for o in objs:
            if o["name"] not in cls_index:
                raise UserError(f"{xml}: object {o['index']} has class {o['name']!r}, not one of {list(classes)}")
            b = o["box"]
            box = clean_box([b[0] - 1.0, b[1] - 1.0, b[2], b[3]], w, h) if b else None
            if box is None:
                dropped["degenerate boxes"] += 1
                continue
            boxes.append(box)
            labels.append(cls_index[o["name"]])
            crowd.append(o["difficult"])
        boxes_a = np.asarray(boxes, np.float32).reshape(-1, 4)
        out.append(DetImage(str(img), w, h, first_id + n, boxes_a, np.asarray(labels, np.int64), np.asarray(crowd, bool),
                            areas=(boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])))
    return out


def _year_dir(root: Path, year: str) -> Path:
    for cand in (root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if cand.is_dir():
            return cand
    raise UserError(f"{root}: no VOC{year} folder (expected {root}/VOC{year}/{{Annotations,JPEGImages,ImageSets/Main}})")


def voc_class_names(root, spec: str) -> List[str]:
    """VOC's 20 classes when every name in the split is one of them, else the sorted names found."""
    names = set()
    for year, ids, d in _split_ids(Path(root), spec):
        for i in ids:
            names.update(o["name"] for o in parse_voc_xml(d / "Annotations" / f"{i}.xml")[1])
    return list(VOC_CLASSES) if names <= set(VOC_CLASSES) else sorted(names)


def _split_ids(root: Path, spec: str):
    for part in spec.split("+"):
        if "_" not in part:
            raise UserError(f"VOC split {part!r}: expected YEAR_SET, e.g. 2007_trainval or 2007_test")
        year, sub = part.split("_", 1)
        d = _year_dir(root, year)
        f = d / "ImageSets" / "Main" / f"{sub}.txt"
        if not f.is_file():
            raise UserError(f"VOC split list not found: {f}")
        ids = [ln.split()[0] for ln in f.read_text().splitlines() if ln.strip()]
        if not ids:
            raise UserError(f"{f}: empty split (no image ids)")
        yield year, ids, d


def read_voc(root, spec: str, classes: Optional[Sequence[str]] = None) -> DetSplit:
    root = Path(root)
    classes = list(classes) if classes else voc_class_names(root, spec)
    images: List[DetImage] = []
    dropped: Dict[str, int] = {"degenerate boxes": 0}
    for year, ids, d in _split_ids(root, spec):
        xmls = [d / "Annotations" / f"{i}.xml" for i in ids]
        for x in xmls:
            if not x.is_file():
                raise UserError(f"{d / 'ImageSets' / 'Main'}: image id {x.stem} listed but {x} not found")
        imgs = []
        for i in ids:
            jpg = d / "JPEGImages" / f"{i}.jpg"
            imgs.append(jpg if jpg.is_file() else next(iter(sorted((d / "JPEGImages").glob(f"{i}.*"))), jpg))
        images += voc_records(xmls, imgs, classes, str(d), spec, first_id=len(images), dropped=dropped)
    return DetSplit(spec, str(root), images, classes, list(range(1, len(classes) + 1)), dropped, False, "voc")
