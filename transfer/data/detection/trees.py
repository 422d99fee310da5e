"""``trees_det``: the real NEON aerial tree tiles shipped in the ``deepforest`` wheel.

``pip install --no-deps deepforest==2.1.0``; its ``data/`` folder is read from disk, the package
is never imported (``../shared/docs/data.md``). Four RGB images with Pascal-VOC XML boxes:
OSBS_029 (400x400, 61 trees), SOAP_061 (400x400, 37 boxes, Alive/Dead), two large YELL crops
(1035x1249 and 2472x2299). Every class is one "tree" class. Images larger than ``tile`` are cut
into ``tile`` x ``tile`` crops (the last row/column aligned to the border); a box is kept in a
crop when at least ``min_visible`` of its area is inside, clipped. The held-out tile
(``holdout``, default OSBS_029 -- another site than the training tiles, the image deepforest's own
evaluation examples use) is the test split; everything else trains. Tiles are written as PNG
plus COCO json so the run reads them with the COCO reader, as a user's data would be.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

from transfer.checkpoint import atomic_write_text, exclusive_build, stamp_matches
from transfer.errors import UserError

from .records import clean_box
from .voc import parse_voc_xml

TREE_IMAGES = ("OSBS_029", "SOAP_061", "2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop")


def deepforest_data_dir() -> Optional[Path]:
    """The wheel's ``deepforest/data`` folder, found without importing the package."""
    try:
        spec = importlib.util.find_spec("deepforest")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    return d if (d / "OSBS_029.xml").is_file() else None


def _tile_starts(n: int, tile: int) -> List[int]:
    if n <= tile:
        return [0]
    k = int(np.ceil(n / tile))
    return sorted({min(i * tile, n - tile) for i in range(k)})


@exclusive_build("out")
def write_tree_tiles(src: Path, out: Path, tile: int = 400, holdout: str = "OSBS_029",
                     min_visible: float = 0.5) -> Dict[str, Path]:
    """Tile the source images into ``out/{train,test}/*.png`` + ``out/annotations/instances_{split}.json``
    (idempotent: skipped when the jsons exist for the same parameters)."""
    src, out = Path(src), Path(out)
    params = {"tile": tile, "holdout": holdout, "min_visible": min_visible, "src": str(src.resolve())}
    stamp = out / "tiles.json"
    jsons = {s: out / "annotations" / f"instances_{s}.json" for s in ("train", "test")}
    if stamp_matches(stamp, params, jsons.values()):
        return jsons
    xmls = sorted(src.glob("*.xml"))
    if not xmls:
        raise UserError(f"{src}: no VOC .xml annotations found (expected the deepforest data/ folder layout)")
    if holdout not in {x.stem for x in xmls}:
        raise UserError(f"trees_det: holdout {holdout!r} is not one of {[x.stem for x in xmls]}")
    recs: Dict[str, dict] = {s: {"images": [], "annotations": [], "categories": [{"id": 1, "name": "tree"}]} for s in jsons}
    for xml in xmls:
        img_path = next((p for p in (src / f"{xml.stem}.png", src / f"{xml.stem}.jpg", src / f"{xml.stem}.tif") if p.is_file()), None)
        if img_path is None:
            raise UserError(f"{xml}: no image {xml.stem}.png/.jpg/.tif next to it")
        _, objs = parse_voc_xml(xml)
        boxes = np.array([[o["box"][0] - 1.0, o["box"][1] - 1.0, o["box"][2], o["box"][3]] for o in objs if o["box"]],
                         np.float32).reshape(-1, 4)
        try:
            with Image.open(img_path) as raw:
                im = raw.convert("RGB")
        except Exception as e:  # not an image, truncated, Pillow's decompression-bomb limit
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise UserError(f"{xml}: cannot read its image {img_path}: {type(e).__name__}: {first}") from None
        W, H = im.size
        split = "test" if xml.stem == holdout else "train"
        (out / split).mkdir(parents=True, exist_ok=True)
        r = recs[split]
        for y0 in _tile_starts(H, tile):
            for x0 in _tile_starts(W, tile):
                w, h = min(tile, W), min(tile, H)
                name = f"{xml.stem}_{x0}_{y0}.png"
                im.crop((x0, y0, x0 + w, y0 + h)).save(out / split / name)
                iid = len(r["images"]) + 1
                r["images"].append({"id": iid, "file_name": name, "width": w, "height": h})
                for b in boxes:
                    area = float((b[2] - b[0]) * (b[3] - b[1]))
                    c = clean_box([b[0] - x0, b[1] - y0, b[2] - x0, b[3] - y0], w, h)
                    if c is None or area <= 0 or (c[2] - c[0]) * (c[3] - c[1]) < min_visible * area:
                        continue
                    r["annotations"].append({"id": len(r["annotations"]) + 1, "image_id": iid, "category_id": 1,
                                             "bbox": [c[0], c[1], c[2] - c[0], c[3] - c[1]],
                                             "area": (c[2] - c[0]) * (c[3] - c[1]), "iscrowd": 0})
    for s, p in jsons.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, json.dumps(recs[s]))
    atomic_write_text(stamp, json.dumps(params))
    return jsons
