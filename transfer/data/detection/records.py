"""The in-memory form every detection reader returns, whatever the layout on disk.

A :class:`DetSplit` is a list of :class:`DetImage` (absolute file, size, boxes ``xyxy`` in
pixels, contiguous labels ``1..K``, optional COCO ``segmentation`` per box, crowd / difficult
flags) plus the class names and the dataset's own category ids (``cat_ids[k-1]`` is the id of
contiguous label ``k``; COCO's ids have gaps, 1..90 for 80 classes, as detectron2's
``thing_dataset_id_to_contiguous_id`` maps them in ``data/datasets/coco.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from transfer.errors import UserError


@dataclass
class DetImage:
    file: str
    width: int
    height: int
    image_id: int
    boxes: np.ndarray  # (N, 4) float32 xyxy, pixels
    labels: np.ndarray  # (N,) int64, contiguous 1..K
    crowd: np.ndarray  # (N,) bool: COCO iscrowd or VOC difficult -- ignored when evaluating, not trained on
    areas: Optional[np.ndarray] = None  # (N,) COCO "area" (mask area) when given, else box area
    segms: Optional[List[Any]] = None  # per box: COCO polygons / RLE, or None


@dataclass
class DetSplit:
    name: str
    source: str  # the file or folder it was read from (named in errors)
    images: List[DetImage]
    classes: List[str]
    cat_ids: List[int]  # dataset category id of contiguous label k at index k-1
    dropped: Dict[str, int] = field(default_factory=dict)  # reason -> count (degenerate boxes, ...)
    has_masks: bool = False
    layout: str = "coco"  # "coco" | "voc"

    @property
    def num_boxes(self) -> int:
        return int(sum(len(im.boxes) for im in self.images))

    def summary(self) -> Dict[str, Any]:
        return {"name": self.name, "source": self.source, "images": len(self.images), "boxes": self.num_boxes,
                "classes": len(self.classes), "dropped": dict(self.dropped), "layout": self.layout}


def clean_box(box, width: int, height: int, min_size: float = 1.0):
    """Clip an ``xyxy`` box to the image; ``None`` when it is degenerate (not finite, or narrower
    or shorter than ``min_size`` pixels after clipping)."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None
    x0, x1 = max(0.0, min(x0, width)), max(0.0, min(x1, width))
    y0, y1 = max(0.0, min(y0, height)), max(0.0, min(y1, height))
    if x1 - x0 < min_size or y1 - y0 < min_size:
        return None
    return [x0, y0, x1, y1]


def check_nonempty(split: DetSplit, what: str = "split") -> DetSplit:
    """An empty split (no images, or no boxes at all) is a user error naming its file."""
    if not split.images:
        raise UserError(f"{split.source}: {what} {split.name!r} has no images")
    if split.num_boxes == 0:
        raise UserError(f"{split.source}: {what} {split.name!r} has {len(split.images)} images but no usable boxes"
                        + (f" (dropped: {split.dropped})" if split.dropped else ""))
    return split


def drop_note(split: DetSplit) -> str:
    """One line saying what was dropped and why (empty when nothing was)."""
    if not any(split.dropped.values()):
        return ""
    parts = ", ".join(f"{n} {why}" for why, n in split.dropped.items() if n)
    return f"{split.source}: dropped {parts}"
