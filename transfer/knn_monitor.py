"""Online weighted k-NN monitor (DINO ``eval_knn.py`` vote: weights ``exp(sim / T)``, T = 0.07,
cosine on L2-normalised features). Torch only, chunked; the full FAISS protocol is in ``probes``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data.augment import eval_transform
from .data.datasets import ImageDataset


@torch.no_grad()
def embed(backbone: torch.nn.Module, ds: ImageDataset, idx: torch.Tensor, size: int, device: torch.device,
          batch: int = 512) -> torch.Tensor:
    was = backbone.training
    backbone.eval()
    dtype = next(backbone.parameters()).dtype
    out = []
    for i in range(0, len(idx), batch):
        j = idx[i:i + batch]
        x = ds.images[j] if ds.images is not None else torch.stack([ds[int(k)][0] for k in j])
        out.append(F.normalize(backbone(eval_transform(x.to(device), size, ds.mean, ds.std).to(dtype)).float(), dim=1).cpu())
    backbone.train(was)
    return torch.cat(out)


@torch.no_grad()
def weighted_knn_top1(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                      k: int = 20, T: float = 0.07, chunk: int = 1024) -> float:
    """Top-1 accuracy (%) of DINO's weighted k-NN vote."""
    assert train_f.shape[1] == test_f.shape[1], f"feature dims {train_f.shape} vs {test_f.shape}"
    n_cls = int(max(train_y.max(), test_y.max())) + 1
    k = min(k, train_f.shape[0])
    correct = 0
    for i in range(0, test_f.shape[0], chunk):
        sim = test_f[i:i + chunk] @ train_f.T
        w, nn_idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], n_cls)
        votes.scatter_add_(1, train_y[nn_idx], (w / T).exp())
        correct += int((votes.argmax(1) == test_y[i:i + chunk]).sum())
    return 100.0 * correct / test_f.shape[0]


def knn_eval(backbone: torch.nn.Module, train: ImageDataset, test: ImageDataset, size: int, device: torch.device,
             bank: int, k: int, T: float, seed: int = 0, max_test: int | None = None) -> float:
    g = torch.Generator().manual_seed(seed)
    tr = torch.randperm(len(train), generator=g)[:bank]
    te = torch.arange(len(test)) if max_test is None else torch.randperm(len(test), generator=g)[:max_test]
    ftr, fte = embed(backbone, train, tr, size, device), embed(backbone, test, te, size, device)
    return weighted_knn_top1(ftr, train.labels[tr], fte, test.labels[te], k, T)


def val_split(n: int, n_val: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(bank candidates, validation queries): a seeded ``n_val``-image subset of the train split
    held out as queries, so recipe settings are chosen without the test split."""
    if not 0 < n_val < n:
        raise ValueError(f"validation size {n_val} must be between 1 and {n - 1} (train has {n} images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_007 + seed))
    return perm[n_val:], perm[:n_val]


def knn_eval_val(backbone: torch.nn.Module, train: ImageDataset, size: int, device: torch.device, bank: int,
                 k: int, T: float, n_val: int, seed: int = 0) -> float:
    """The monitor on a validation split carved from train (queries) with a bank of other train images."""
    rest, val = val_split(len(train), n_val, seed)
    g = torch.Generator().manual_seed(seed)
    tr = rest[torch.randperm(len(rest), generator=g)[:bank]]
    ftr, fva = embed(backbone, train, tr, size, device), embed(backbone, train, val, size, device)
    return weighted_knn_top1(ftr, train.labels[tr], fva, train.labels[val], k, T)


def pixels_knn(train: ImageDataset, test: ImageDataset, bank: int, k: int, T: float, seed: int = 0,
               max_test: int | None = None) -> float:
    """The raw-pixel baseline with the same protocol (flattened, L2-normalised, cosine)."""
    g = torch.Generator().manual_seed(seed)
    tr = torch.randperm(len(train), generator=g)[:bank]
    te = torch.arange(len(test)) if max_test is None else torch.randperm(len(test), generator=g)[:max_test]
    a = train.images[tr].flatten(1).float()
    b = test.images[te].flatten(1).float()
    return weighted_knn_top1(F.normalize(a, dim=1), train.labels[tr], F.normalize(b, dim=1), test.labels[te], k, T)

