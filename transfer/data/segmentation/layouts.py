"""Readers for the standard segmentation layouts at a user path: Pascal VOC 2012 (+ SBD "aug"),
Cityscapes, ADE20K. Folder names follow mmsegmentation's dataset preparation guide
(``docs/en/user_guides/2_dataset_prepare.md``) and its dataset classes
(``mmseg/datasets/voc.py``, ``cityscapes.py``, ``ade.py``), so one folder serves both engines.
A folder that exists but lacks a part raises :class:`UserError` with the exact layout expected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ...errors import UserError
from .base import IGNORE_INDEX, FileSegDataset, read_list

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]

CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle"]
# cityscapesScripts helpers/labels.py: labelId -> trainId (others -> 255)
CITYSCAPES_ID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                            25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}

ADE_CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag"]
assert len(ADE_CLASSES) == 150 and len(CITYSCAPES_CLASSES) == 19 and len(VOC_CLASSES) == 21

VOC_LAYOUT = """\
DATA/                       (--data DATA; DATA may also be VOCdevkit/ or hold VOCdevkit/VOC2012/)
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png          palette PNG, class indices 0..20, 255 = ignore (object borders)
  ImageSets/Segmentation/train.txt    one <id> per line
  ImageSets/Segmentation/val.txt
  SegmentationClassAug/<id>.png       optional: SBD "aug" masks (mmseg tools/dataset_converters/voc_aug.py)
  ImageSets/Segmentation/aug.txt      optional: ids of the aug masks (train = train.txt + aug.txt)"""

CITYSCAPES_LAYOUT = """\
DATA/                       (--data DATA)
  leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png
  gtFine/{train,val}/<city>/<name>_gtFine_labelTrainIds.png   trainIds 0..18, 255 = ignore
      (or <name>_gtFine_labelIds.png: mapped to trainIds on the fly; the mmseg engine needs
       labelTrainIds, made by mmseg tools/dataset_converters/cityscapes.py)"""

ADE_LAYOUT = """\
DATA/                       (--data DATA; DATA may also hold ADEChallengeData2016/)
  images/{training,validation}/<name>.jpg
  annotations/{training,validation}/<name>.png   0 = other (ignored), 1..150 = classes"""


def _bad_layout(data: Path, what: str, layout: str) -> UserError:
    return UserError(f"{data}: {what}; expected layout:\n{layout}")


# ----------------------------------------------------------------------------- VOC
def voc_root(data: Path) -> Path:
    for cand in (data, data / "VOC2012", data / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise _bad_layout(data, "no JPEGImages/ folder found", VOC_LAYOUT)


def read_voc(data: Path, split: str, classes: Optional[List[str]] = None) -> FileSegDataset:
    root = voc_root(Path(data))
    sets = root / "ImageSets" / "Segmentation"
    if not (root / "SegmentationClass").is_dir():
        raise _bad_layout(root, "no SegmentationClass/ folder", VOC_LAYOUT)
    if not (sets / f"{split}.txt").is_file():
        raise _bad_layout(root, f"split file ImageSets/Segmentation/{split}.txt missing", VOC_LAYOUT)
    pairs: List[Tuple[Path, Path]] = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png")
                                      for i in read_list(sets / f"{split}.txt")]
    if split == "train" and (sets / "aug.txt").is_file() and (root / "SegmentationClassAug").is_dir():
        seen = {p[0] for p in pairs}
        for i in read_list(sets / "aug.txt"):
            a = root / "JPEGImages" / f"{i}.jpg"
            if a not in seen:
                pairs.append((a, root / "SegmentationClassAug" / f"{i}.png"))
    if not pairs:
        raise _bad_layout(root, f"ImageSets/Segmentation/{split}.txt lists no images", VOC_LAYOUT)
    return FileSegDataset(pairs, classes or VOC_CLASSES, name=f"voc:{split}")


# ----------------------------------------------------------------------------- Cityscapes
def _cityscapes_ids_to_train(mask: np.ndarray) -> np.ndarray:
    lut = np.full(256 if mask.max(initial=0) < 256 else int(mask.max()) + 1, IGNORE_INDEX, dtype=np.int64)
    for k, v in CITYSCAPES_ID_TO_TRAINID.items():
        lut[k] = v
    return lut[np.clip(mask, 0, len(lut) - 1)]


def read_cityscapes(data: Path, split: str, classes: Optional[List[str]] = None) -> FileSegDataset:
    data = Path(data)
    img_dir, gt_dir = data / "leftImg8bit" / split, data / "gtFine" / split
    if not img_dir.is_dir():
        raise _bad_layout(data, f"leftImg8bit/{split}/ missing", CITYSCAPES_LAYOUT)
    if not gt_dir.is_dir():
        raise _bad_layout(data, f"gtFine/{split}/ missing", CITYSCAPES_LAYOUT)
    imgs = sorted(img_dir.glob("*/*_leftImg8bit.png"))
    if not imgs:
        raise _bad_layout(data, f"no leftImg8bit/{split}/<city>/*_leftImg8bit.png images", CITYSCAPES_LAYOUT)
    pairs, use_ids = [], None
    for ip in imgs:
        stem = ip.name[: -len("_leftImg8bit.png")]
        train_ids = gt_dir / ip.parent.name / f"{stem}_gtFine_labelTrainIds.png"
        label_ids = gt_dir / ip.parent.name / f"{stem}_gtFine_labelIds.png"
        if use_ids is None:
            use_ids = not train_ids.is_file() and label_ids.is_file()
        pairs.append((ip, label_ids if use_ids else train_ids))
    return FileSegDataset(pairs, classes or CITYSCAPES_CLASSES, name=f"cityscapes:{split}",
                          label_fn=_cityscapes_ids_to_train if use_ids else None)


# ----------------------------------------------------------------------------- ADE20K
def ade_root(data: Path) -> Path:
    for cand in (data, data / "ADEChallengeData2016"):
        if (cand / "images").is_dir():
            return cand
    raise _bad_layout(data, "no images/ folder found", ADE_LAYOUT)


def _reduce_zero_label(mask: np.ndarray) -> np.ndarray:
    """mmseg ``LoadAnnotations(reduce_zero_label=True)``: 0 -> 255, k -> k - 1 (255 stays 255)."""
    out = mask - 1
    out[mask == 0] = IGNORE_INDEX
    out[mask == IGNORE_INDEX] = IGNORE_INDEX
    return out


def read_ade(data: Path, split: str, classes: Optional[List[str]] = None) -> FileSegDataset:
    root = ade_root(Path(data))
    sub = {"train": "training", "val": "validation"}.get(split, split)
    img_dir, ann_dir = root / "images" / sub, root / "annotations" / sub
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise _bad_layout(root, f"images/{sub}/ or annotations/{sub}/ missing", ADE_LAYOUT)
    imgs = sorted(img_dir.glob("*.jpg"))
    if not imgs:
        raise _bad_layout(root, f"no images/{sub}/*.jpg", ADE_LAYOUT)
    pairs = [(ip, ann_dir / f"{ip.stem}.png") for ip in imgs]
    return FileSegDataset(pairs, classes or ADE_CLASSES, name=f"ade:{split}", label_fn=_reduce_zero_label)


READERS: Dict[str, object] = {"voc": read_voc, "cityscapes": read_cityscapes, "ade": read_ade}
LAYOUTS: Dict[str, str] = {"voc": VOC_LAYOUT, "cityscapes": CITYSCAPES_LAYOUT, "ade": ADE_LAYOUT}
