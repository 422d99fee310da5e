"""Standard linear protocol on the frozen backbone, with augmentation (for GPU users).

Two recipes:
- ``moco`` (facebookresearch/moco ``main_lincls.py``): SGD, lr 30, momentum 0.9, weight decay 0,
  batch 256, 100 epochs, lr x0.1 at epochs 60 and 80; fc initialised N(0, 0.01), bias 0;
- ``simsiam`` (facebookresearch/simsiam ``main_lincls.py --lars``): LARS, lr 0.02 x batch/256
  (batch 4096 in the paper), momentum 0.9, weight decay 0, cosine decay over 90 epochs.
The backbone stays in eval mode (frozen BN statistics) and receives no gradient; training views
are RandomResizedCrop (scale 0.08-1) + horizontal flip, test views the eval transform.
``augment=False`` trains on the eval view instead (features computed once): the same optimiser,
schedule and initialisation on exactly the features the fast probe sees, which is how the
cross-check test compares the two (tests/probes/test_probes_crosscheck.py).
The defaults below are small so a CPU test finishes; pass the paper values on a GPU.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from transfer.data import eval_transform
from transfer.errors import UserError
from transfer.optim import LARS, param_groups

from .knn import per_class_accuracy

RECIPES = {
    "moco": {"optimizer": "sgd", "lr": 30.0, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 256,
             "epochs": 100, "schedule": "step@0.6,0.8"},
    "simsiam": {"optimizer": "lars", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 4096,
                "epochs": 90, "schedule": "cosine"},
}


def _lr_at(recipe: str, base_lr: float, epoch_f: float, epochs: int) -> float:
    if recipe == "moco":
        return base_lr * (0.1 ** sum(epoch_f >= m * epochs for m in (0.6, 0.8)))
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch_f / epochs))


def train_view(x_uint8: torch.Tensor, size: int, mean, std, g: torch.Generator,
               scale: tuple = (0.08, 1.0), ratio: tuple = (3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop + horizontal flip of a uint8 batch with one ``grid_sample``, normalised,
    3 channels. ``g`` is a CPU generator (parameters are drawn on CPU, then moved)."""
    b, dev = x_uint8.shape[0], x_uint8.device
    u = torch.rand(b, 5, generator=g)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    r = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    w, h = torch.sqrt(area * r).clamp(max=1.0), torch.sqrt(area / r).clamp(max=1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = w * torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    theta[:, 0, 2] = (u[:, 2] * 2 - 1) * (1 - w)
    theta[:, 1, 1] = h
    theta[:, 1, 2] = (u[:, 3] * 2 - 1) * (1 - h)
    x = x_uint8.float().div_(255.0)
    grid = F.affine_grid(theta.to(dev), [b, x.shape[1], size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    m = torch.tensor(list(mean), device=dev).view(1, -1, 1, 1)
    s = torch.tensor(list(std), device=dev).view(1, -1, 1, 1)
    x = (x - m) / s
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


@torch.no_grad()
def _features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return backbone(x).float()


def linear_eval_frozen(backbone: nn.Module, train_ds, test_ds, size: int, mean, std,
                       recipe: str = "moco", epochs: int = 2, batch_size: int = 256,
                       lr: Optional[float] = None, device: str = "cpu", seed: int = 0,
                       max_steps: Optional[int] = None, augment: bool = True) -> Dict:
    """Train a linear classifier on the frozen ``backbone`` with augmentation; test accuracy (%).

    ``lr`` defaults to the recipe's (MoCo 30; SimSiam 0.02 x batch/256). Returns a dict with
    ``top1``, ``top5``, ``per_class``, ``train_loss``, hyperparameters and ``protocol``.
    """
    if recipe not in RECIPES:
        raise UserError(f"linear recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    if len(train_ds) == 0 or len(test_ds) == 0:
        raise UserError("linear probe: empty train or test split")
    dev = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    backbone = backbone.eval().to(dev)
    for p in backbone.parameters():
        p.requires_grad_(False)
    nc = len(train_ds.classes)
    fc = nn.Linear(backbone.feature_dim, nc).to(dev)
    nn.init.normal_(fc.weight, 0.0, 0.01)
    nn.init.zeros_(fc.bias)
    r = RECIPES[recipe]
    base_lr = lr if lr is not None else (r["lr"] if recipe == "moco" else r["lr"] * batch_size / 256)
    opt: torch.optim.Optimizer
    if r["optimizer"] == "sgd":
        opt = torch.optim.SGD(fc.parameters(), lr=base_lr, momentum=r["momentum"], weight_decay=r["weight_decay"])
    else:
        # SimSiam main_lincls.py: LARS on the head; biases / 1-D parameters plain SGD without decay
        opt = LARS(param_groups(fc, r["weight_decay"]), lr=base_lr, momentum=r["momentum"], eta=0.001)
    n = len(train_ds)
    steps_per_epoch = max(1, n // batch_size)
    images = getattr(train_ds, "images", None)
    cached: Optional[torch.Tensor] = None
    if not augment:  # the frozen eval-mode backbone is deterministic: one pass over the eval view
        chunks = []
        for lo in range(0, n, batch_size):
            idx = torch.arange(lo, min(lo + batch_size, n))
            xb = images[idx] if images is not None else torch.stack([train_ds[int(j)][0] for j in idx])
            chunks.append(_features(backbone, eval_transform(xb.to(dev), size, mean, std)))
        cached = torch.cat(chunks)
    step, loss_v = 0, float("nan")
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            yb = train_ds.labels[idx].to(dev)
            if cached is not None:
                feats = cached[idx.to(dev)]
            else:
                xb = images[idx] if images is not None else torch.stack([train_ds[int(j)][0] for j in idx])
                feats = _features(backbone, train_view(xb.to(dev), size, mean, std, g))
            for pg in opt.param_groups:
                pg["lr"] = _lr_at(recipe, base_lr, ep + i / steps_per_epoch, epochs)
            loss = F.cross_entropy(fc(feats), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_v, step = loss.detach().item(), step + 1
            if max_steps is not None and step >= max_steps:
                break
        if max_steps is not None and step >= max_steps:
            break
    preds, tops, ys = [], [], []
    with torch.no_grad():
        test_images = getattr(test_ds, "images", None)
        for lo in range(0, len(test_ds), batch_size):
            idx = torch.arange(lo, min(lo + batch_size, len(test_ds)))
            xb = test_images[idx] if test_images is not None else torch.stack([test_ds[int(j)][0] for j in idx])
            s = fc(_features(backbone, eval_transform(xb.to(dev), size, mean, std))).cpu()
            t = s.topk(min(5, nc), dim=1).indices
            preds.append(t[:, 0])
            tops.append(t)
            ys.append(test_ds.labels[idx])
    pred, top, y = torch.cat(preds), torch.cat(tops), torch.cat(ys)
    views = "RandomResizedCrop+flip" if augment else "eval view, no augmentation"
    return {"protocol": f"standard linear protocol ({recipe}): frozen backbone in eval mode, "
                        f"{views}, {r['optimizer'].upper()} {r['schedule']}", "augment": augment,
            "recipe": recipe, "epochs": epochs, "batch_size": batch_size, "lr": base_lr,
            "momentum": r["momentum"], "weight_decay": r["weight_decay"], "steps": step,
            "train_loss": loss_v, "top1": float((pred == y).double().mean() * 100),
            "top5": float((top == y[:, None]).any(1).double().mean() * 100),
            "per_class": per_class_accuracy(pred, y, nc), "n_train": n, "n_test": len(test_ds), "warnings": []}
