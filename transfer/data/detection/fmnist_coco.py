"""``fmnist_det``'s data on disk: Fashion-MNIST test-item scenes (:mod:`.fmnist_scenes`) written in
the COCO-json layout and read back with :func:`~transfer.data.detection.coco.read_coco`, the reader
a user's COCO folder goes through::

    root/annotations/instances_{train,val,test}.json
    root/{train,val,test}/<split>_<i>.png          8-bit grayscale, lossless

Categories 1..10 are the Fashion-MNIST classes in label order. Each annotation is one visible
object: ``bbox`` the tight box of its visible pixels (``[x, y, w, h]``, pixel edges), ``area`` its
visible pixel count, ``segmentation`` the visible mask as compressed RLE (pycocotools). Extra keys
(ignored by COCO tools) say where it came from: ``fmnist_index`` (row in the t10k files),
``paint_order``, ``item_xy`` and ``item_side`` (where the resized item was pasted). Each image
lists ``fmnist_fragments``, the t10k rows cropped into its background.

The folder is written once per :class:`~.fmnist_scenes.SceneSpec` and scene counts (a stamp,
``scenes.json``, records them); a different request rewrites it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from PIL import Image

from transfer.checkpoint import atomic_write_text, exclusive_build, stamp_matches
from transfer.data.datasets import FASHION_CLASSES
from transfer.errors import UserError

from .coco import read_coco
from .fmnist_scenes import SceneSpec, as_spec, scene_sets

STAMP = "scenes.json"


def coco_annotations(scene, image_id: int, first_ann_id: int):
    """The COCO ``annotations`` records of one scene."""
    # pycocotools is optional (the detection extra)
    from pycocotools import mask as mask_util

    out = []
    for order, it in enumerate(scene.items):
        rle = mask_util.encode(np.asfortranarray(it.visible.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"id": first_ann_id + len(out), "image_id": image_id, "category_id": it.label + 1,
                    "bbox": it.box(), "area": int(it.visible.sum()), "iscrowd": 0, "segmentation": rle,
                    "fmnist_index": it.index, "paint_order": order, "item_xy": [it.x, it.y], "item_side": it.side})
    return out


@exclusive_build("root")
def write_fmnist_coco(root, counts: Dict[str, int], spec: SceneSpec, fmnist_root: Optional[str] = None) -> Dict[str, Path]:
    """Write (or reuse) the scenes; returns ``{split: json path}``."""
    root = Path(root)
    params = {"layout": "coco", "spec": spec.stamp(), "counts": {k: int(v) for k, v in counts.items()}}
    jsons = {s: root / "annotations" / f"instances_{s}.json" for s in counts}
    stamp = root / STAMP
    if stamp_matches(stamp, params, jsons.values()):
        return jsons
    stamp.unlink(missing_ok=True)  # a half-written folder never passes for a finished one
    cats = [{"id": k + 1, "name": name, "supercategory": "clothing"} for k, name in enumerate(FASHION_CLASSES)]
    recs = {s: {"images": [], "annotations": [], "categories": cats} for s in counts}
    for split, i, scene in scene_sets(counts, spec, fmnist_root):
        (root / split).mkdir(parents=True, exist_ok=True)
        name = f"{split}_{i:05d}.png"
        Image.fromarray(scene.image).save(root / split / name)  # the stamp, written last, marks completion
        r = recs[split]
        iid = len(r["images"]) + 1
        r["images"].append({"id": iid, "file_name": name, "width": spec.size, "height": spec.size,
                            "fmnist_fragments": scene.fragments})
        r["annotations"] += coco_annotations(scene, iid, len(r["annotations"]) + 1)
    for split, p in jsons.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, json.dumps(recs[split]))
    atomic_write_text(stamp, json.dumps(params))
    return jsons


def read_fmnist_det(root, settings: Dict[str, object]):
    """``(train, evaluation)`` :class:`~.records.DetSplit` of ``fmnist_det``: the scenes are written under
    ``root`` when missing (counts ``n_train``/``n_val``/``n_test``, spec from the settings), then read
    back by the COCO reader. ``eval_split`` (``test``, or ``val`` when choosing settings) is evaluated."""
    ev = str(settings.get("eval_split", "test"))
    if ev not in ("val", "test"):
        raise UserError(f"fmnist_det: eval_split={ev!r}; choose val (to choose settings) or test (to report)")
    counts = {"train": int(settings.get("n_train", 300)), "val": int(settings.get("n_val", 50)),
              "test": int(settings.get("n_test", 150))}
    root = Path(root)
    jsons = write_fmnist_coco(root, counts, as_spec(settings))
    return (read_coco(jsons["train"], root / "train", name="train"),
            read_coco(jsons[ev], root / ev, name=ev))
