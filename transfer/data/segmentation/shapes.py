"""A deterministic synthetic segmentation set: circles, squares and triangles on textured
backgrounds, written in a standard layout (VOC by default; Cityscapes and ADE20K for exercising
those readers exactly as a user's folder would). The fixture for fast tests of every code path;
never a substitute for real data when reporting accuracy.

Labels: 0 background, 1 circle, 2 square, 3 triangle; in the VOC layout each shape also gets a
1-pixel 255 ("ignore") outline like VOC's object borders. Cityscapes writes the ids as
``labelTrainIds`` (or Cityscapes ``labelIds`` with ``label_ids=True``); ADE20K writes ``id + 1`` with
0 = "other" (the reader's ``reduce_zero_label`` undoes it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw

from .layouts import CITYSCAPES_ID_TO_TRAINID

CLASSES = ["background", "circle", "square", "triangle"]


def _palette() -> list:
    # VOC's bit-interleaved colour map (devkit VOCcolormap), for palette PNGs and report images
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


VOC_PALETTE = _palette()


def make_sample(rng: np.random.Generator, size: int, border: bool) -> Tuple[np.ndarray, np.ndarray]:
    """One (H, W, 3) uint8 image and its (H, W) uint8 label map."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(60, 190, size=3)
    f = rng.uniform(0.05, 0.4)
    tex = 25 * np.sin(f * xx + rng.uniform(0, 6)) * np.cos(f * 0.7 * yy + rng.uniform(0, 6))
    img = np.clip(base[None, None, :] + tex[..., None] + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    lab = Image.new("L", (size, size), 0)
    d_im, d_lab = ImageDraw.Draw(im), ImageDraw.Draw(lab)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, 4))
        r = float(rng.uniform(size * 0.1, size * 0.25))
        cx, cy = rng.uniform(r, size - r, size=2)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if cls == 1:
            shape = [cx - r, cy - r, cx + r, cy + r]
            d_im.ellipse(shape, fill=colour)
            d_lab.ellipse(shape, fill=cls, outline=255 if border else cls)
        elif cls == 2:
            shape = [cx - r, cy - r, cx + r, cy + r]
            d_im.rectangle(shape, fill=colour)
            d_lab.rectangle(shape, fill=cls, outline=255 if border else cls)
        else:
            pts = [(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)]
            d_im.polygon(pts, fill=colour)
            d_lab.polygon(pts, fill=cls, outline=255 if border else cls)
    return np.asarray(im), np.asarray(lab)


def write_shapes(root: Path, layout: str = "voc", n_train: int = 24, n_val: int = 8, size: int = 64,
                 seed: int = 0, label_ids: bool = False) -> Path:
    """Write the set under ``root`` in ``layout`` ("voc" | "cityscapes" | "ade"); returns ``root``.
    Same arguments -> byte-identical files."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    train_ids = {v: k for k, v in CITYSCAPES_ID_TO_TRAINID.items()}
    for split, n in (("train", n_train), ("val", n_val)):
        ids = []
        for i in range(n):
            img, lab = make_sample(rng, size, border=(layout == "voc"))
            name = f"{split}_{i:04d}"
            ids.append(name)
            if layout == "voc":
                (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
                (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
                p = Image.fromarray(lab).convert("P")
                p.putpalette(VOC_PALETTE)
                p.save(root / "SegmentationClass" / f"{name}.png")
            elif layout == "cityscapes":
                city = "synthcity"
                (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
                (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / "leftImg8bit" / split / city / f"{city}_{name}_leftImg8bit.png")
                if label_ids:
                    ids_map = np.vectorize(lambda t: train_ids.get(int(t), 0))(lab).astype(np.uint8)
                    Image.fromarray(ids_map).save(root / "gtFine" / split / city / f"{city}_{name}_gtFine_labelIds.png")
                else:
                    Image.fromarray(lab).save(root / "gtFine" / split / city / f"{city}_{name}_gtFine_labelTrainIds.png")
            elif layout == "ade":
                sub = {"train": "training", "val": "validation"}[split]
                (root / "images" / sub).mkdir(parents=True, exist_ok=True)
                (root / "annotations" / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / "images" / sub / f"ADE_{name}.jpg", quality=95)
                Image.fromarray((lab.astype(np.int64) + 1).clip(0, 255).astype(np.uint8)).save(
                    root / "annotations" / sub / f"ADE_{name}.png")
            else:
                raise ValueError(f"unknown layout {layout!r}")
        if layout == "voc":
            (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
            (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root
