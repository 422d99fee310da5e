"""Shared pieces of the Fashion-MNIST scene tests: a small scene spec, the t10k items read
independently of the generator, and the visible masks recomputed from an annotation's provenance."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
COUNTS = {"train": 6, "val": 3, "test": 5}


def small_spec(**over):
    from transfer.data.detection.fmnist_scenes import SceneSpec

    kw = dict(size=80, items=(3, 5), side=(24, 40), min_visible=0.5, fragments=(2, 5), seed=3)
    kw.update(over)
    return SceneSpec(**kw)


def small_settings(**over) -> Dict[str, object]:
    """Task settings for the small spec (for ``read_fmnist_det`` / ``read_fmnist_seg`` and task runs)."""
    s = dict(n_train=COUNTS["train"], n_val=COUNTS["val"], n_test=COUNTS["test"], image_size=80, items=[3, 5],
             item_side=[24, 40], min_visible=0.5, fragments=[2, 5], data_seed=3, eval_split="test")
    s.update(over)
    return s


def t10k():
    """(images, labels) of the test split, parsed here from the IDX bytes (not by the package)."""
    def read(name):
        with gzip.open(FMNIST_DIR / name, "rb") as f:
            data = f.read()
        magic, n = struct.unpack(">II", data[:8])
        if magic == 2051:
            return np.frombuffer(data, np.uint8, offset=16).reshape(n, 28, 28)
        return np.frombuffer(data, np.uint8, offset=8)

    return read("t10k-images-idx3-ubyte.gz"), read("t10k-labels-idx1-ubyte.gz")


def resized(item: np.ndarray, side: int) -> np.ndarray:
    """The contract: bilinear resize (Pillow), the native 28 px untouched."""
    from PIL import Image

    if side == item.shape[0]:
        return item
    return np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))


def expected_visible(anns: List[dict], items: np.ndarray, size: int) -> List[np.ndarray]:
    """Per annotation (any order), its visible mask: the item's nonzero pixels after resizing,
    minus the footprints of the items painted after it; plus each resized patch."""
    feet = []
    for a in anns:
        patch = resized(items[a["fmnist_index"]], a["item_side"])
        foot = np.zeros((size, size), bool)
        x, y = a["item_xy"]
        foot[y:y + a["item_side"], x:x + a["item_side"]] = patch > 0
        feet.append(foot)
    out = []
    for a, foot in zip(anns, feet):
        later = np.zeros_like(foot)
        for b, f in zip(anns, feet):
            if b["paint_order"] > a["paint_order"]:
                later |= f
        out.append(foot & ~later)
    return out
