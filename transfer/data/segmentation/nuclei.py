"""The nuclei set: one real 512x512 16-bit fluorescence image and its instance mask of 125 nuclei
(DSB2018, shipped in the ``stardist`` wheel as ``stardist/data/images/{img2d,mask2d}.tif``).
Found with ``importlib.util.find_spec`` -- stardist is never imported. Semantic mask =
``instance > 0`` (classes background, nucleus). The image is split by rows into a training band
(top ``1 - val_frac``) and a held-out validation band (bottom), each tiled into crops; training
tiles overlap by half a tile, validation tiles do not.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from ...errors import UserError
from .base import ArraySegDataset, Sample, check_sample, read_label_map, to_uint8_rgb

CLASSES = ["background", "nucleus"]
LAYOUT = """\
either the stardist wheel (`pip install --no-deps stardist==0.9.2`; its data/images/img2d.tif and
mask2d.tif are read, stardist is never imported), or --data DATA with
  DATA/img2d.tif + DATA/mask2d.tif            an image and its instance (or 0/1) mask, or
  DATA/images/<name>.tif|png + DATA/masks/<name>.tif|png   several such pairs (same names)"""

def stardist_images() -> Optional[Path]:
    try:
        spec = importlib.util.find_spec("stardist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
    return d if (d / "img2d.tif").is_file() and (d / "mask2d.tif").is_file() else None


def find_nuclei(data: Optional[str]) -> Optional[Path]:
    if data:
        p = Path(data).expanduser()
        return p if p.exists() else None
    return stardist_images()


def _read_raw(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"image file missing: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as e:
        raise UserError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


def nuclei_pairs(data: Path) -> List[Tuple[Path, Path]]:
    data = Path(data)
    if (data / "img2d.tif").exists() or (data / "mask2d.tif").exists():
        return [(data / "img2d.tif", data / "mask2d.tif")]
    if (data / "images").is_dir() and (data / "masks").is_dir():
        pairs = []
        for ip in sorted(p for p in (data / "images").iterdir() if p.suffix.lower() in (".tif", ".tiff", ".png")):
            cands = [data / "masks" / (ip.stem + s) for s in (".tif", ".tiff", ".png")]
            mp = next((c for c in cands if c.is_file()), cands[0])
            pairs.append((ip, mp))
        if pairs:
            return pairs
    raise UserError(f"{data}: no nuclei image/mask pair found; expected:\n{LAYOUT}")


def _tiles(h: int, w: int, tile: int, stride: int) -> List[Tuple[int, int]]:
    ys = list(range(0, max(h - tile, 0) + 1, stride)) or [0]
    xs = list(range(0, max(w - tile, 0) + 1, stride)) or [0]
    if ys[-1] + tile < h:
        ys.append(h - tile)
    if xs[-1] + tile < w:
        xs.append(w - tile)
    return [(y, x) for y in ys for x in xs]


def read_nuclei(data: Path, tile: int = 128, val_frac: float = 0.25) -> Tuple[ArraySegDataset, ArraySegDataset]:
    """(train, val) tiles of every image/mask pair under ``data``."""
    if not 0 < val_frac < 1:
        raise UserError(f"nuclei val_frac must be in (0, 1), got {val_frac}")
    train: List[Sample] = []
    val: List[Sample] = []
    for ip, mp in nuclei_pairs(data):
        img = to_uint8_rgb(_read_raw(ip), ip)
        inst = read_label_map(mp)
        check_sample(img, np.zeros_like(inst), 1, ip, mp)  # sizes
        if inst.min() < 0:
            raise UserError(f"mask {mp}: negative values; expected an instance mask (0 = background)")
        sem = (inst > 0).astype(np.int64)
        h = img.shape[0]
        cut = int(round(h * (1 - val_frac)))
        if cut < tile or h - cut < min(tile, h - cut) or h - cut <= 0:
            raise UserError(f"{ip}: {img.shape[1]}x{h} is too small for tile={tile} with val_frac={val_frac}")
        vt = min(tile, h - cut)
        for y, x in _tiles(cut, img.shape[1], tile, max(1, tile // 2)):
            train.append((img[y:y + tile, x:x + tile], sem[y:y + tile, x:x + tile], f"{ip.stem}_y{y}_x{x}"))
        for y, x in _tiles(h - cut, img.shape[1], vt, vt):
            yy = cut + y
            val.append((img[yy:yy + vt, x:x + vt], sem[yy:yy + vt, x:x + vt], f"{ip.stem}_y{yy}_x{x}"))
    return ArraySegDataset(train, CLASSES, "nuclei:train"), ArraySegDataset(val, CLASSES, "nuclei:val")
