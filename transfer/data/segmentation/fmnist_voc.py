"""``fmnist_seg``'s data on disk: Fashion-MNIST test-item scenes
(:mod:`transfer.data.detection.fmnist_scenes`, the same scenes ``fmnist_det`` gets for the same
settings) written in the Pascal-VOC segmentation layout and read back with
:func:`~transfer.data.segmentation.layouts.read_voc`, the reader a user's VOC folder goes through::

    root/JPEGImages/<split>_<i>.jpg                 grayscale JPEG (quality 95), as VOC's images
    root/SegmentationClass/<split>_<i>.png          palette PNG: 0 background, 1..10 the classes
    root/ImageSets/Segmentation/{train,val,test}.txt

The class map is exact: a pixel is class ``k + 1`` where a Fashion-MNIST item of label ``k`` is
visible (its own nonzero pixels after resizing, not painted over by a later item), else 0.
No 255 ("ignore") borders: every pixel is labelled. Written once per scene spec and counts
(stamp ``scenes.json``); a different request rewrites the folder's files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

from PIL import Image

from transfer.checkpoint import atomic_write_text, exclusive_build, stamp_matches
from transfer.data.datasets import FASHION_CLASSES
from transfer.errors import UserError

from ..detection.fmnist_scenes import SceneSpec, as_spec, scene_sets
from .layouts import read_voc
from .shapes import VOC_PALETTE

CLASSES = ["background"] + list(FASHION_CLASSES)
STAMP = "scenes.json"


@exclusive_build("root")
def write_fmnist_voc(root, counts: Dict[str, int], spec: SceneSpec, fmnist_root: Optional[str] = None) -> Path:
    """Write (or reuse) the scenes under ``root``; returns ``root``."""
    root = Path(root)
    params = {"layout": "voc", "spec": spec.stamp(), "counts": {k: int(v) for k, v in counts.items()}}
    sets = root / "ImageSets" / "Segmentation"
    stamp = root / STAMP
    if stamp_matches(stamp, params, [sets / f"{s}.txt" for s in counts]):
        return root
    stamp.unlink(missing_ok=True)  # a half-written folder never passes for a finished one
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids: Dict[str, list] = {s: [] for s in counts}
    for split, i, scene in scene_sets(counts, spec, fmnist_root):
        name = f"{split}_{i:05d}"
        Image.fromarray(scene.image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        mask = Image.fromarray(scene.class_map()).convert("P")
        mask.putpalette(VOC_PALETTE)
        mask.save(root / "SegmentationClass" / f"{name}.png")
        ids[split].append(name)
    for split, names in ids.items():
        atomic_write_text(sets / f"{split}.txt", "\n".join(names) + "\n")
    atomic_write_text(stamp, json.dumps(params))
    return root


def read_fmnist_seg(root, settings: Dict[str, object]):
    """``(train, evaluation)`` splits of ``fmnist_seg`` through the VOC reader, writing the scenes under
    ``root`` first when missing. ``eval_split``: ``test`` (to report) or ``val`` (to choose settings)."""
    ev = str(settings.get("eval_split", "test"))
    if ev not in ("val", "test"):
        raise UserError(f"fmnist_seg: eval_split={ev!r}; choose val (to choose settings) or test (to report)")
    counts = {"train": int(settings.get("n_train", 300)), "val": int(settings.get("n_val", 50)),
              "test": int(settings.get("n_test", 150))}
    write_fmnist_voc(root, counts, as_spec(settings))
    return read_voc(Path(root), "train", CLASSES), read_voc(Path(root), ev, CLASSES)
