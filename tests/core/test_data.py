"""Datasets, the IDX reader, batched augmentation and the deterministic batch stream."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from transfer.data import AugmentConfig, StepBatches, TwoViewAugment, build_dataset, read_idx
from transfer.data.datasets import FASHION_MNIST_DIRS
from transfer.errors import UserError


def _write_idx(path: Path, arr: torch.Tensor, magic: int, gz: bool = True) -> None:
    head = struct.pack(">II", magic, arr.shape[0]) + (struct.pack(">II", *arr.shape[1:]) if magic == 2051 else b"")
    data = head + arr.numpy().astype("uint8").tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_idx_round_trip_and_errors(tmp_path):
    x = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (7,), dtype=torch.uint8)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", x, 2051)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", y, 2049)
    ds = build_dataset("fashion_mnist", "test", root=str(tmp_path))
    assert torch.equal(ds.images[:, 0], x) and torch.equal(ds.labels, y.long()) and ds.grayscale
    bad = tmp_path / "bad.gz"
    _write_idx(bad, x, 2051)
    raw = gzip.open(bad).read()
    gzip.open(bad, "wb").write(raw[:-5])
    with pytest.raises(UserError, match="truncated"):
        read_idx(bad)
    gzip.open(bad, "wb").write(b"\x00\x00\x09\x99" + raw[4:])
    with pytest.raises(UserError, match="bad IDX magic"):
        read_idx(bad)


@pytest.mark.skipif(not Path(FASHION_MNIST_DIRS[0]).is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    tr, te = build_dataset("fashion_mnist", "train"), build_dataset("fashion_mnist", "test")
    assert tuple(tr.images.shape) == (60000, 1, 28, 28) and len(te) == 10000
    assert torch.bincount(te.labels).tolist() == [1000] * 10


def test_digits_and_synthetic_are_deterministic():
    a, b = build_dataset("synthetic", "train"), build_dataset("synthetic", "train")
    assert torch.equal(a.images, b.images) and set(a.labels.tolist()) == {0, 1, 2, 3}
    d = build_dataset("digits", "train")
    assert d.images.shape[1:] == (1, 8, 8) and d.images.max() == 255


def test_image_folder(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40 + i, 30), (i * 40, 100, 200)).save(tmp_path / "train" / c / f"{i}.png")
    ds = build_dataset(str(tmp_path), "train", load_size=24)
    x, y = ds[4]
    assert x.shape == (3, 24, 24) and x.dtype == torch.uint8 and y == 1 and ds.classes == ["cat", "dog"]
    with pytest.raises(UserError, match="no class sub-folders"):
        build_dataset(str(tmp_path / "train" / "cat"), "train")


@pytest.mark.parametrize("channels", [1, 3])
def test_two_views_shapes_determinism_and_rank_split(channels):
    x = torch.randint(0, 256, (8, channels, 28, 28), dtype=torch.uint8)
    aug = TwoViewAugment(AugmentConfig(size=32), [0.5] * channels, [0.25] * channels)
    v1, v2 = aug(x, torch.Generator().manual_seed(3))
    assert v1.shape == (8, 3, 32, 32) and not torch.equal(v1, v2)
    w1, _ = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(v1, w1)
    # rank r of 2 gets exactly its rows of the 1-process views. Tolerance: no reduction spans rows;
    # the only order-dependent arithmetic is affine_grid's 3-term dot product per pixel (a different
    # kernel path for another batch size), <= 3 eps32 * |value| ~ 1e-6 on normalised pixels in [-3, 3].
    r0 = aug(x[:4], torch.Generator().manual_seed(3), offset=0, total=8)
    r1 = aug(x[4:], torch.Generator().manual_seed(3), offset=4, total=8)
    assert torch.allclose(torch.cat([r0[0], r1[0]]), v1, atol=1e-6)
    assert torch.allclose(torch.cat([r0[1], r1[1]]), v2, atol=1e-6)
    if channels == 1:  # grayscale-aware: the 3 channels stay identical
        assert torch.equal(v1[:, 0], v1[:, 1]) and torch.equal(v1[:, 1], v1[:, 2])


def test_step_batches_resume_and_ranks():
    full = list(StepBatches(100, 20, seed=1, rank=0, world=1, start=0, end=12))
    assert len(full) == 12 and all(len(b) == 20 for b in full)
    assert sorted(sum(full[:5], [])) == list(range(100))  # one epoch = a permutation
    assert list(StepBatches(100, 20, 1, 0, 1, start=7, end=12)) == full[7:]
    r0 = list(StepBatches(100, 20, 1, 0, 2, 0, 12))
    r1 = list(StepBatches(100, 20, 1, 1, 2, 0, 12))
    assert [a + b for a, b in zip(r0, r1)] == full
    with pytest.raises(UserError, match="divisible"):
        StepBatches(100, 21, 1, 0, 2, 0, 1)


def test_image_folder_splits_must_share_classes(tmp_path):
    from PIL import Image

    for split, classes in (("train", ["a", "b"]), ("val", ["a", "c"])):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / c / "x.png")
    with pytest.raises(UserError, match="class folders differ.*b, c"):
        build_dataset(str(tmp_path), "test")
