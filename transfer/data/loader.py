"""Deterministic, resumable batch streams.

Step ``s`` of a run always sees the same images: epoch ``e = s // steps_per_epoch`` draws a
permutation from a generator seeded with ``(seed, e)``; the global batch is a contiguous slice of
it, and rank ``r`` takes its ``r``-th share. Resuming at any step (mid-epoch included) therefore
needs only the step counter. In-memory sets are gathered directly; folder sets decode whole images
in DataLoader workers.
"""
from __future__ import annotations

from typing import Iterator, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import UserError
from .augment import PaddedBatch
from .datasets import ImageDataset


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class StepBatches(Sampler):
    """Yields the local index batches for steps ``start .. end-1``."""

    def __init__(self, n: int, global_batch: int, seed: int, rank: int, world: int, start: int, end: int) -> None:
        if global_batch % world:
            raise UserError(f"global batch {global_batch} is not divisible by the world size {world}")
        if n < global_batch:
            raise UserError(f"dataset has {n} images, fewer than one global batch of {global_batch}")
        self.n, self.gb, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.start, self.end = start, end
        self.steps_per_epoch = n // global_batch
        self.local = global_batch // world

    def indices(self, step: int) -> torch.Tensor:
        e, i = divmod(step, self.steps_per_epoch)
        perm = epoch_permutation(self.n, self.seed, e)
        lo = i * self.gb + self.rank * self.local
        return perm[lo:lo + self.local]

    def __iter__(self) -> Iterator[list]:
        cache_e, perm = -1, None
        for s in range(self.start, self.end):
            e, i = divmod(s, self.steps_per_epoch)
            if e != cache_e:
                cache_e, perm = e, epoch_permutation(self.n, self.seed, e)
            lo = i * self.gb + self.rank * self.local
            yield perm[lo:lo + self.local].tolist()

    def __len__(self) -> int:
        return max(0, self.end - self.start)


def _collate(items):
    xs, ys = zip(*items)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def _collate_padded(items):
    xs, ys = zip(*items)
    return PaddedBatch.stack(xs), torch.tensor(ys, dtype=torch.long)


class _FullImages(Dataset):
    """A folder dataset's training decode (:meth:`ImageFolderDataset.full_image`), one per item."""

    def __init__(self, ds: ImageDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        return self.ds.full_image(i)


def iterate_batches(ds: ImageDataset, sampler: StepBatches,
                    workers: int = 0) -> Iterator[Tuple[int, Union[torch.Tensor, PaddedBatch], torch.Tensor]]:
    """(step, uint8 images, labels) for every step of the sampler: in-memory sets give a
    (B, C, H, W) tensor; folder sets (with ``full_image``) a :class:`PaddedBatch` of whole images,
    decoded per item in the workers, so training crops see the full frame."""
    if ds.images is not None:
        for step, idx in zip(range(sampler.start, sampler.end), sampler):
            t = torch.as_tensor(idx)
            yield step, ds.images[t], ds.labels[t]
        return
    full = hasattr(ds, "full_image")
    loader = DataLoader(_FullImages(ds) if full else ds, batch_sampler=sampler, num_workers=workers,
                        collate_fn=_collate_padded if full else _collate,
                        persistent_workers=False, pin_memory=torch.cuda.is_available())
    for step, (x, y) in zip(range(sampler.start, sampler.end), loader):
        yield step, x, y
