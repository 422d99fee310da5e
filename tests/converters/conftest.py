"""Fixtures: randomly initialised torchvision ResNets (no downloads), BN statistics randomised."""
from __future__ import annotations

from typing import Dict

import pytest
import torch
import torchvision

from transfer.backbones import build_backbone


def _randomise(sd: Dict[str, torch.Tensor], seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(int(torch.randint(1, 10_000, (1,), generator=g)))
        elif k.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("running_mean", ".bias")) or k.startswith("bn1."):
            out[k] = torch.randn(v.shape, generator=g) * 0.1
        else:
            out[k] = v.clone()
    return out


_CACHE: Dict[tuple, Dict[str, torch.Tensor]] = {}


def tv_state(depth: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A torchvision resnet{depth} state dict with random weights and non-trivial BN stats."""
    key = ("tv", depth, seed)
    if key not in _CACHE:
        torch.manual_seed(seed)
        _CACHE[key] = _randomise(getattr(torchvision.models, f"resnet{depth}")().state_dict(), seed)
    return _CACHE[key]


def small_state(seed: int = 0) -> Dict[str, torch.Tensor]:
    """A CIFAR-style (3x3 stem, no max-pool) ResNet-18 with torchvision names, as solo-learn uses."""
    key = ("small", 18, seed)
    if key not in _CACHE:
        torch.manual_seed(seed)
        _CACHE[key] = _randomise(build_backbone("small_resnet18").state_dict(), seed)
    return _CACHE[key]


@pytest.fixture(scope="session")
def r18() -> Dict[str, torch.Tensor]:
    return tv_state(18)


@pytest.fixture(scope="session")
def r18_momentum() -> Dict[str, torch.Tensor]:
    return tv_state(18, seed=1)
