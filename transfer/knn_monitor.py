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
    out = []
    for i in range(0, len(idx), batch):
        j = idx[i:i + batch]
        x = ds.images[j] if ds.images is not None else torch.stack([ds[int(k)][0] for k in j])
        out.append(F.normalize(backbone(eval_transform(x.to(device), size, ds.mean, ds.std)).float(), dim=1).cpu())
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


def pixels_knn(train: ImageDataset, test: ImageDataset, bank: int, k: int, T: float, seed: int = 0,
               max_test: int | None = None) -> float:
    """The raw-pixel baseline with the same protocol (flattened, L2-normalised, cosine)."""
    g = torch.Generator().manual_seed(seed)
    tr = torch.randperm(len(train), generator=g)[:bank]
    te = torch.arange(len(test)) if max_test is None else torch.randperm(len(test), generator=g)[:max_test]
    a = train.images[tr].flatten(1).float()
    b = test.images[te].flatten(1).float()
    return weighted_knn_top1(F.normalize(a, dim=1), train.labels[tr], F.normalize(b, dim=1), test.labels[te], k, T)

