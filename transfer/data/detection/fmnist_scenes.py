"""Scenes composed from Fashion-MNIST **test-split** items, for ``fmnist_det`` and ``fmnist_seg``.

Only the ``t10k`` files are read, so no image a backbone was pretrained on (the 60,000 training
items) reaches a transfer task. The 10,000 test items are permuted once (by ``seed``) and cut into
disjoint train / val / test pools; a scene of one split uses items of that split's pool only,
for its objects and for its background clutter alike.

A scene is a ``size`` x ``size`` grayscale canvas:

- background: smooth low-contrast noise plus dim fragments (small crops, 25-50 % intensity) of
  other pool items -- clutter that looks like clothing texture but is not an object;
- objects: ``items`` Fashion-MNIST items, each resized (bilinear) to a side drawn from ``side``
  and pasted at an integer position inside the canvas, in paint order. An item's footprint is its
  own nonzero pixels after resizing; painting replaces the canvas there, so a later item occludes
  an earlier one. A placement is accepted only when every earlier item keeps at least
  ``min_visible`` of its footprint (partial overlap, never full occlusion).

Every object carries its **visible** mask (footprint minus the footprints painted after it), so
boxes, instance masks and the per-pixel class map all describe pixels one can see. Same
arguments -> the same scenes, byte for byte.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from transfer.data.datasets import fashion_mnist
from transfer.errors import UserError

SPLITS = ("train", "val", "test")
POOL_FRACTIONS = {"train": 0.6, "val": 0.1, "test": 0.3}


@dataclass(frozen=True)
class SceneSpec:
    """What a scene set is made of; every field is part of the on-disk stamp."""

    size: int = 112
    items: Tuple[int, int] = (3, 6)  # objects per scene, inclusive
    side: Tuple[int, int] = (28, 56)  # resized item side in pixels, inclusive (28 = native)
    min_visible: float = 0.5  # fraction of its footprint each object keeps visible
    fragments: Tuple[int, int] = (4, 10)  # background fragments per scene, inclusive
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.side
        if not (4 <= lo <= hi <= self.size):
            raise UserError(f"fmnist scenes: item side {self.side} must satisfy 4 <= min <= max <= size={self.size}")
        if not (1 <= self.items[0] <= self.items[1]):
            raise UserError(f"fmnist scenes: items per scene {self.items} must be 1 <= min <= max")
        if not (0.0 < self.min_visible <= 1.0):
            raise UserError(f"fmnist scenes: min_visible={self.min_visible} must be in (0, 1]")
        if not (0 <= self.fragments[0] <= self.fragments[1]):
            raise UserError(f"fmnist scenes: fragments {self.fragments} must be 0 <= min <= max")

    def stamp(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class PlacedItem:
    index: int  # row of the item in the t10k files
    label: int  # Fashion-MNIST class 0..9
    x: int  # top-left corner of the resized item on the canvas
    y: int
    side: int
    visible: np.ndarray  # (size, size) bool: pixels of this item nobody painted over

    def box(self) -> List[int]:
        """Tight ``[x0, y0, width, height]`` of the visible pixels (COCO's convention)."""
        ys, xs = np.nonzero(self.visible)
        return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


@dataclass
class Scene:
    image: np.ndarray  # (size, size) uint8
    items: List[PlacedItem]  # in paint order
    fragments: List[int] = field(default_factory=list)  # t10k rows cropped into the background

    def class_map(self) -> np.ndarray:
        """(size, size) uint8: 0 background, ``label + 1`` where an item is visible."""
        out = np.zeros(self.image.shape, np.uint8)
        for it in self.items:
            out[it.visible] = it.label + 1
        return out


# ------------------------------------------------------------------------------- sources
def load_test_items(root: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The 10,000 Fashion-MNIST test items ``(N, 28, 28) uint8`` and labels ``(N,) int64``, read
    from the ``t10k`` IDX files only."""
    ds = fashion_mnist("test", root)
    return ds.images[:, 0].numpy(), ds.labels.numpy()


def split_pools(n: int, seed: int, fractions: Optional[Dict[str, float]] = None) -> Dict[str, np.ndarray]:
    """Disjoint sorted index pools ``{train, val, test}`` covering ``range(n)``."""
    fr = dict(fractions or POOL_FRACTIONS)
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    c1 = int(round(n * fr["train"]))
    c2 = c1 + int(round(n * fr["val"]))
    return {"train": np.sort(perm[:c1]), "val": np.sort(perm[c1:c2]), "test": np.sort(perm[c2:])}


def scale_item(item: np.ndarray, side: int) -> np.ndarray:
    """An item resized to ``side`` x ``side`` (Pillow bilinear; the native 28 px is returned as is)."""
    if item.shape == (side, side):
        return item.copy()
    return np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))


class _Draw:
    """Items of one pool in a seeded order, reshuffled each time the pool is used up."""

    def __init__(self, pool: np.ndarray, rng: np.random.Generator) -> None:
        if len(pool) == 0:
            raise UserError("fmnist scenes: an empty item pool (too few test items for the split fractions)")
        self.pool, self.rng, self.order, self.pos = pool, rng, rng.permutation(pool), 0

    def __call__(self) -> int:
        if self.pos == len(self.order):
            self.order, self.pos = self.rng.permutation(self.pool), 0
        self.pos += 1
        return int(self.order[self.pos - 1])


# ------------------------------------------------------------------------------- composing
def _background(rng: np.random.Generator, spec: SceneSpec, images: np.ndarray, draw: _Draw) -> Tuple[np.ndarray, List[int]]:
    n = spec.size
    coarse = rng.uniform(0, 1, (n // 16 + 2, n // 16 + 2)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse).resize((n, n), Image.BILINEAR), np.float32)
    canvas = smooth * rng.uniform(15, 45) + rng.normal(0, 4, (n, n))
    used = []
    for _ in range(int(rng.integers(spec.fragments[0], spec.fragments[1] + 1))):
        idx = draw()
        used.append(idx)
        patch = scale_item(images[idx], int(rng.integers(spec.side[0], spec.side[1] + 1))).astype(np.float32)
        ch, cw = (int(v) for v in rng.integers(6, 15, 2))
        py, px = int(rng.integers(0, patch.shape[0] - ch + 1)), int(rng.integers(0, patch.shape[1] - cw + 1))
        y, x = int(rng.integers(0, n - ch + 1)), int(rng.integers(0, n - cw + 1))
        frag = patch[py:py + ch, px:px + cw] * rng.uniform(0.25, 0.5)
        canvas[y:y + ch, x:x + cw] = np.maximum(canvas[y:y + ch, x:x + cw], frag)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), used


def compose(rng: np.random.Generator, spec: SceneSpec, images: np.ndarray, labels: np.ndarray, draw: _Draw,
            tries: int = 30) -> Scene:
    """One scene (see the module docstring)."""
    n = spec.size
    canvas, frags = _background(rng, spec, images, draw)
    owner = np.full((n, n), -1, np.int64)  # index (paint order) of the item on top, -1 = background
    full: List[int] = []
    placed: List[Tuple[int, int, int, int, int]] = []  # (t10k row, label, x, y, side)
    for _ in range(int(rng.integers(spec.items[0], spec.items[1] + 1))):
        idx = draw()
        side = int(rng.integers(spec.side[0], spec.side[1] + 1))
        patch = scale_item(images[idx], side)
        foot = patch > 0
        if not foot.any():
            continue
        for _ in range(tries):
            x, y = (int(v) for v in rng.integers(0, n - side + 1, 2))
            trial = owner.copy()
            trial[y:y + side, x:x + side][foot] = len(placed)
            kept = np.bincount(trial[trial >= 0], minlength=len(placed) + 1)
            if all(kept[j] >= spec.min_visible * full[j] for j in range(len(placed))):
                owner = trial
                canvas[y:y + side, x:x + side][foot] = patch[foot]
                full.append(int(foot.sum()))
                placed.append((idx, int(labels[idx]), x, y, side))
                break
    items = [PlacedItem(idx, lab, x, y, side, owner == j) for j, (idx, lab, x, y, side) in enumerate(placed)]
    return Scene(canvas, items, frags)


def generate(split: str, count: int, spec: SceneSpec, images: np.ndarray, labels: np.ndarray,
             pools: Dict[str, np.ndarray]) -> Iterator[Scene]:
    """``count`` scenes of ``split`` from its pool; the stream depends only on (spec, split)."""
    if split not in SPLITS:
        raise UserError(f"fmnist scenes: split {split!r} is not one of {SPLITS}")
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), 104729])
    draw = _Draw(pools[split], rng)
    for _ in range(int(count)):
        yield compose(rng, spec, images, labels, draw)


def scene_sets(counts: Dict[str, int], spec: SceneSpec, root: Optional[str] = None) -> Iterator[Tuple[str, int, Scene]]:
    """``(split, i, scene)`` for every split in ``counts`` (t10k items, pools from ``spec.seed``)."""
    images, labels = load_test_items(root)
    pools = split_pools(len(images), spec.seed)
    for split, n in counts.items():
        for i, sc in enumerate(generate(split, n, spec, images, labels, pools)):
            yield split, i, sc


def as_spec(settings: Dict[str, object]) -> SceneSpec:
    """A :class:`SceneSpec` from task settings (``image_size``, ``items``, ``item_side``,
    ``min_visible``, ``fragments``, ``data_seed``)."""
    def pair(key: str, default: Sequence[int]) -> Tuple[int, int]:
        v = settings.get(key, default)
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise UserError(f"setting {key}={v!r}: expected [min, max]")
        return int(v[0]), int(v[1])

    d = SceneSpec()
    return SceneSpec(size=int(settings.get("image_size", d.size)), items=pair("items", d.items),
                     side=pair("item_side", d.side), min_visible=float(settings.get("min_visible", d.min_visible)),
                     fragments=pair("fragments", d.fragments), seed=int(settings.get("data_seed", d.seed)))
