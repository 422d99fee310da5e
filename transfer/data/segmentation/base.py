"""What every segmentation reader returns: a :class:`SegDataset` of (RGB uint8 image, label map).

Label maps hold class indices ``0..C-1`` and ``255`` for "ignore" (VOC's object borders,
Cityscapes' void classes, ADE20K's "other" after ``reduce_zero_label``). Every sample is checked
when it is read: image and mask of different sizes, label values outside the classes (other
than 255), unreadable or missing files raise :class:`~transfer.errors.UserError` naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ...errors import UserError

IGNORE_INDEX = 255
Sample = Tuple[np.ndarray, np.ndarray, str]  # (H, W, 3) uint8 image, (H, W) int64 labels, name


def to_uint8_rgb(a: np.ndarray, path: object = "") -> np.ndarray:
    """Any 2-D / 3-D image array -> (H, W, 3) uint8. Integer images wider than 8 bits (e.g. 16-bit
    microscopy) are stretched between their 0.5 and 99.8 percentiles, as microscopy tools do."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise UserError(f"{path}: expected a grayscale or RGB image, got an array of shape {a.shape}")
    if a.dtype != np.uint8:
        f = a.astype(np.float64)
        lo, hi = np.percentile(f, 0.5), np.percentile(f, 99.8)
        f = np.clip((f - lo) / max(hi - lo, 1e-9), 0, 1) * 255.0
        a = f.round().astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a)


def read_image(path: Path) -> np.ndarray:
    if not Path(path).is_file():
        raise UserError(f"image file missing: {path}")
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "L", "P", "RGBA", "CMYK", "YCbCr", "LA"):
                a = np.asarray(im.convert("RGB"))
            else:  # I;16, I, F: keep the depth, stretch in to_uint8_rgb
                a = np.asarray(im)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    return to_uint8_rgb(a, path)


def read_label_map(path: Path) -> np.ndarray:
    """A single-channel label PNG/TIFF (palette, 8- or 16-bit grayscale) -> (H, W) int64."""
    if not Path(path).is_file():
        raise UserError(f"mask file missing: {path}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            a = np.asarray(im)
    except Exception as e:
        raise UserError(f"cannot read mask {path}: {type(e).__name__}: {e}") from None
    if a.ndim != 2:
        raise UserError(f"mask {path}: expected a single-channel label image (palette or grayscale class "
                        f"indices), got mode {mode} with shape {a.shape}")
    if a.dtype.kind == "f":
        raise UserError(f"mask {path}: mode {mode} holds floating-point values; expected integer class indices "
                        f"(palette, 8- or 16-bit grayscale)")
    return a.astype(np.int64)


def check_sample(img: np.ndarray, mask: np.ndarray, num_classes: int, img_name: object, mask_name: object) -> None:
    """Image and mask the same size; labels in [0, num_classes) or 255. Errors name the files."""
    if img.shape[:2] != mask.shape[:2]:
        raise UserError(f"mask {mask_name} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {img_name} is "
                        f"{img.shape[1]}x{img.shape[0]}; image and mask must have the same size")
    bad = (mask != IGNORE_INDEX) & ((mask < 0) | (mask >= num_classes))
    if bad.any():
        vals = sorted(set(np.unique(mask[bad]).tolist()))[:8]
        raise UserError(f"mask {mask_name}: label values {vals} are outside the {num_classes} classes "
                        f"(0..{num_classes - 1}, and {IGNORE_INDEX} = ignore)")


class SegDataset:
    """A split: ``len()``, ``[i] -> (image, labels, name)``, ``classes``, ``name``."""

    classes: List[str]
    name: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class FileSegDataset(SegDataset):
    """(image file, mask file) pairs; ``label_fn`` maps the raw mask to training ids (e.g.
    ADE20K's ``reduce_zero_label``, Cityscapes labelIds -> trainIds)."""

    def __init__(self, pairs: Sequence[Tuple[Path, Path]], classes: Sequence[str], name: str = "",
                 label_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> None:
        self.pairs = [(Path(a), Path(b)) for a, b in pairs]
        self.classes, self.name, self.label_fn = list(classes), name, label_fn
        for a, b in self.pairs:
            if not a.is_file():
                raise UserError(f"image file missing: {a} (listed for split {name!r})")
            if not b.is_file():
                raise UserError(f"mask file missing: {b} (for image {a})")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Sample:
        ip, mp = self.pairs[i]
        img, mask = read_image(ip), read_label_map(mp)
        if self.label_fn is not None:
            mask = self.label_fn(mask)
        check_sample(img, mask, self.num_classes, ip, mp)
        return img, mask, ip.stem


class ArraySegDataset(SegDataset):
    """Samples held in memory (tiles of one large image, for example)."""

    def __init__(self, items: Sequence[Sample], classes: Sequence[str], name: str = "") -> None:
        self.items, self.classes, self.name = list(items), list(classes), name
        for img, mask, n in self.items:
            check_sample(img, mask, self.num_classes, n, n)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        return self.items[i]


def read_list(path: Path) -> List[str]:
    """An ImageSets-style split file: one image id per line."""
    if not path.is_file():
        raise UserError(f"split file missing: {path}")
    return [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
