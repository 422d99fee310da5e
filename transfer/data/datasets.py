"""Dataset registry: Fashion-MNIST (IDX files), scikit-learn digits, a deterministic synthetic
set, and ImageFolder at any path.

Every dataset yields ``(uint8 tensor (C, H, W), label)`` with C = 1 (grayscale) or 3, and carries
``classes``, ``labels`` (LongTensor), ``grayscale``, and the normalisation ``mean`` / ``std`` the
model sees. In-memory sets also expose ``images`` (N, C, H, W) for fast batched gathers.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UserError
from ..registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


class ImageDataset(Dataset):
    """Base class; subclasses set the attributes below."""

    name: str
    classes: List[str]
    labels: torch.Tensor
    grayscale: bool
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    images: Optional[torch.Tensor] = None  # (N, C, H, W) uint8 when held in memory

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        assert self.images is not None
        return self.images[i], int(self.labels[i])

    def describe(self) -> str:
        return f"{self.name}: {len(self)} images, {len(self.classes)} classes"


class TensorImageDataset(ImageDataset):
    def __init__(self, name: str, images: torch.Tensor, labels: torch.Tensor, classes: List[str],
                 mean: Sequence[float], std: Sequence[float]) -> None:
        assert images.dtype == torch.uint8 and images.dim() == 4, f"images must be uint8 NCHW, got {images.dtype} {tuple(images.shape)}"
        assert images.shape[0] == labels.shape[0], f"{images.shape[0]} images but {labels.shape[0]} labels"
        self.name, self.images, self.labels, self.classes = name, images.contiguous(), labels.long(), classes
        self.grayscale = images.shape[1] == 1
        self.mean, self.std = tuple(mean), tuple(std)


DATASETS: Registry[Callable[..., ImageDataset]] = Registry("dataset")


# ---------------------------------------------------------------- Fashion-MNIST (IDX)
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): big-endian magic 2051 (images) / 2049 (labels)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 8:
        raise UserError(f"{path}: too short to be an IDX file")
    magic, n = struct.unpack(">II", data[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        shape, off = (n, rows, cols), 16
    elif magic == 2049:
        shape, off = (n,), 8
    else:
        raise UserError(f"{path}: bad IDX magic number {magic} (expected 2051 or 2049)")
    need = int(np.prod(shape))
    if len(data) - off != need:
        raise UserError(f"{path}: truncated IDX file ({len(data) - off} bytes of data, header says {need})")
    return np.frombuffer(data, dtype=np.uint8, offset=off).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path:
    for cand in (root / f"{stem}.gz", root / stem):
        if cand.is_file():
            return cand
    raise UserError(f"Fashion-MNIST file {stem}[.gz] not found in {root} "
                    f"(install with 'apt-get install dataset-fashion-mnist' or pass data.root)")


@DATASETS.register("fashion_mnist")
def fashion_mnist(split: str = "train", root: Optional[str] = None) -> ImageDataset:
    if root is None:
        root = os.environ.get("TRANSFER_FASHION_MNIST") or next(
            (d for d in FASHION_MNIST_DIRS if Path(d).is_dir()), FASHION_MNIST_DIRS[0])
    root_p = Path(root)
    if not root_p.is_dir():
        raise UserError(f"Fashion-MNIST folder not found: {root_p} "
                        f"(install with 'apt-get install dataset-fashion-mnist' or pass data.root)")
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise UserError(f"Fashion-MNIST has splits 'train' and 'test', not {split!r}")
    x = read_idx(_find_idx(root_p, f"{prefix}-images-idx3-ubyte"))
    y = read_idx(_find_idx(root_p, f"{prefix}-labels-idx1-ubyte"))
    if x.shape[0] != y.shape[0]:
        raise UserError(f"{root_p}: {x.shape[0]} images but {y.shape[0]} labels in split {split!r}")
    return TensorImageDataset("fashion_mnist", torch.from_numpy(x.copy()).unsqueeze(1),
                              torch.from_numpy(y.astype(np.int64)), list(FASHION_CLASSES),
                              (0.2860,), (0.3530,))


# ---------------------------------------------------------------- scikit-learn digits
@DATASETS.register("digits")
def digits(split: str = "train", root: Optional[str] = None) -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits, values 0-16 scaled to 0-255; a fixed 80/20 split."""
    from sklearn.datasets import load_digits  # optional: scikit-learn only for this dataset

    d = load_digits()
    x = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(y))
    idx = {"train": perm[:cut], "test": perm[cut:]}.get(split)
    if idx is None:
        raise UserError(f"digits has splits 'train' and 'test', not {split!r}")
    return TensorImageDataset("digits", x[idx], y[idx], [str(i) for i in range(10)], (0.3,), (0.4,))


# ---------------------------------------------------------------- synthetic
SYNTH_CLASSES = ["disc", "square", "ring", "cross"]


def make_synthetic(n: int, size: int = 32, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Deterministic shapes (disc, square, ring, cross) of random colour, size and position on a
    textured background. Class = shape. Same (n, size, seed) -> same bytes on every machine."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    labels = torch.randint(0, len(SYNTH_CLASSES), (n,), generator=g)
    imgs = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for i in range(n):
        bg = torch.rand(3, 1, 1, generator=g) * 0.5
        tex = 0.15 * torch.sin(xx * (0.3 + torch.rand(1, generator=g)) + yy * torch.rand(1, generator=g) * 0.5)
        img = bg + tex
        r = size * (0.18 + 0.14 * torch.rand(1, generator=g).item())
        cx, cy = (size * (0.3 + 0.4 * torch.rand(2, generator=g))).tolist()
        dx, dy = xx - cx, yy - cy
        c = int(labels[i])
        if c == 0:
            m = dx ** 2 + dy ** 2 <= r ** 2
        elif c == 1:
            m = (dx.abs() <= r * 0.85) & (dy.abs() <= r * 0.85)
        elif c == 2:
            d2 = dx ** 2 + dy ** 2
            m = (d2 <= r ** 2) & (d2 >= (0.55 * r) ** 2)
        else:
            m = ((dx.abs() <= r * 0.3) & (dy.abs() <= r)) | ((dy.abs() <= r * 0.3) & (dx.abs() <= r))
        col = 0.5 + 0.5 * torch.rand(3, 1, 1, generator=g)
        img = torch.where(m.unsqueeze(0), col.expand(3, size, size), img)
        imgs[i] = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return imgs, labels


@DATASETS.register("synthetic")
def synthetic(split: str = "train", root: Optional[str] = None, n: Optional[int] = None) -> ImageDataset:
    sizes = {"train": 512, "test": 256}
    if split not in sizes:
        raise UserError(f"synthetic has splits 'train' and 'test', not {split!r}")
    x, y = make_synthetic(n or sizes[split], 32, seed={"train": 0, "test": 1}[split])
    return TensorImageDataset("synthetic", x, y, list(SYNTH_CLASSES), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


# ---------------------------------------------------------------- ImageFolder
IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def resize_short_side(w: int, h: int, size: int) -> Tuple[int, int]:
    """torchvision ``Resize(size)``'s output (width, height): the short side becomes ``size``, the
    long side ``int(size * long / short)`` (truncated, as ``_compute_resized_output_size``)."""
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


def centre_box(w: int, h: int, size: int) -> Tuple[int, int, int, int]:
    """torchvision ``CenterCrop(size)``'s box (left, top, right, bottom): offsets
    ``int(round((w - size) / 2))``. A centre crop of ``load_size`` = 256 then the eval view's centre
    224 (offset 16) is torchvision's single centre crop of 224: Python's round-half-to-even
    commutes with adding an even integer."""
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return left, top, left + size, top + size


class ImageFolderDataset(ImageDataset):
    """``root/<class>/<image>`` (torchvision's ImageFolder layout), decoded lazily with Pillow, one
    image per item.

    Two decodes of the same file:

    - ``ds[i]`` (every evaluation path: k-NN monitor, probes, fine-tuning): torchvision's
      ``Resize(load_size)`` + ``CenterCrop(load_size)`` on the PIL image, so items stack; the eval
      view (:func:`~transfer.data.augment.eval_transform`, size 224) then crops the centre 224, which
      equals ``Resize(256)`` + ``CenterCrop(224)`` (see :func:`centre_box`).
    - :meth:`full_image` (training): the whole image, so the RandomResizedCrop boxes are drawn
      over the full frame as torchvision's (borders included). Images whose long side exceeds
      ``max_side`` (default ``2 x load_size``) are first downscaled isotropically to that long side:
      box area fractions and aspect ratios are those of the original up to pixel rounding, and a
      batch padded to the largest image stays bounded (B x 3 x max_side^2 bytes).
    """

    def __init__(self, root: Path, load_size: int = 256, max_side: Optional[int] = None) -> None:
        if not root.is_dir():
            raise UserError(f"image folder not found: {root}")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        if not classes:
            raise UserError(f"{root}: no class sub-folders (expected {root}/<class>/<image>.jpg)")
        files, labels = [], []
        for ci, c in enumerate(classes):
            for p in sorted((root / c).rglob("*")):
                if p.suffix.lower() in IMG_EXT:
                    files.append(p)
                    labels.append(ci)
        if not files:
            raise UserError(f"{root}: no images with extensions {IMG_EXT}")
        self.name, self.root, self.files, self.classes = root.name, root, files, classes
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.load_size = load_size
        self.max_side = int(max_side or 2 * load_size)
        self.grayscale = False
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def _decode(self, i: int, full: bool) -> torch.Tensor:
        try:
            with Image.open(self.files[i]) as im:
                im = im.convert("RGB")
                w, h = im.size
                if not full:
                    nw, nh = resize_short_side(w, h, self.load_size)
                    if (nw, nh) != (w, h):
                        im = im.resize((nw, nh), Image.BILINEAR)
                    im = im.crop(centre_box(nw, nh, self.load_size))
                elif max(w, h) > self.max_side:
                    s = self.max_side / max(w, h)
                    im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # bomb: Pillow's pixel limit
            raise UserError(f"cannot decode image {self.files[i]}: {e}") from None
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        return self._decode(i, full=False), int(self.labels[i])

    def full_image(self, i: int) -> Tuple[torch.Tensor, int]:
        """The whole image (long side at most ``max_side``), uint8 (3, H, W), and its label."""
        return self._decode(i, full=True), int(self.labels[i])


@DATASETS.register("imagenet")
def imagenet(split: str = "train", root: Optional[str] = None, load_size: int = 256) -> ImageDataset:
    """ImageNet (or any large set) in ImageFolder layout: ``ROOT/{train,val}/<wnid>/<image>``,
    ``ROOT`` from ``data.root`` or ``$TRANSFER_IMAGENET``."""
    root = root or os.environ.get("TRANSFER_IMAGENET")
    if not root:
        raise UserError("imagenet needs data.root=PATH or $TRANSFER_IMAGENET (layout ROOT/train/<class>/*.JPEG, ROOT/val/<class>/*.JPEG)")
    sub = Path(root) / ("train" if split == "train" else "val")
    if not sub.is_dir():
        raise UserError(f"ImageNet split folder not found: {sub} (layout ROOT/train/<class>/*.JPEG, ROOT/val/<class>/*.JPEG)")
    return ImageFolderDataset(sub, load_size)


def build_dataset(name: str, split: str = "train", root: Optional[str] = None,
                  load_size: int = 256) -> ImageDataset:
    """A registered name (``fashion_mnist``, ``digits``, ``synthetic``) or a folder path.

    For a folder, ``split`` picks ``<path>/<split>`` when it exists (``train``/``val``/``test``),
    else the folder itself is the split.
    """
    if name == "imagenet":
        return imagenet(split, root, load_size)
    if name in DATASETS:
        return DATASETS.get(name)(split=split, root=root)
    p = Path(name).expanduser()
    if p.exists() or "/" in name or name.startswith("."):
        if not p.is_dir():
            raise UserError(f"dataset path is not a folder: {p}")
        sub = p / split
        if not sub.is_dir() and split == "test" and (p / "val").is_dir():
            sub = p / "val"
        ds = ImageFolderDataset(sub if sub.is_dir() else p, load_size)
        train = p / "train"
        if split != "train" and sub.is_dir() and train.is_dir():
            # labels are class indices: every split must list the same classes, or they shift
            tc = sorted(d.name for d in train.iterdir() if d.is_dir())
            if tc != ds.classes:
                diff = sorted(set(tc) ^ set(ds.classes))
                raise UserError(f"{sub}: class folders differ from {train} ({', '.join(diff[:5])}); "
                                f"every split needs the same class sub-folders")
        return ds
    return DATASETS.get(name)  # raises the "unknown dataset ... did you mean" error
