"""The model zoo: publish a pretrained backbone with its conversions, model card and every result
measured on it; list, show and get it back, each file checked against its sha256.

Python API::

    import model_zoo
    model_zoo.publish("runs/byol_r18", "byol-r18-fmnist")   # local zoo only; probes first: `transfer zoo publish --probe`
    model_zoo.list_models()                     # {name: index entry}
    print(model_zoo.show("byol-r18-fmnist"))    # the model card (Markdown, YAML front matter)
    folder = model_zoo.get("byol-r18-fmnist", out="./byol")   # verified copy
    model = model_zoo.load("byol-r18-fmnist")   # torchvision.models.ResNet carrying the weights
    bb = model_zoo.load_backbone("byol-r18-fmnist")            # transfer.backbones.ResNetBackbone

``zoo:NAME`` is accepted wherever ``--ckpt`` is (probes, ``transfer run``, ``transfer convert``);
it resolves through :func:`resolve` in the zoo named by ``$TRANSFER_ZOO`` (default
``~/.cache/transfer/zoo``). A zoo is a directory or a read-only ``http(s)://`` base URL; layout and
integrity rules in :mod:`model_zoo.store`, where results are found in :mod:`model_zoo.results`.

``load`` returns a ``torchvision.models.ResNet`` (``resnet{depth}(weights=None)``; ``fc`` keeps its
random init). A small-image-stem backbone comes back as the same torchvision class with the stem
swapped for the one it was trained with (``conv1`` 3x3 stride 1, ``maxpool`` = ``nn.Identity``), as
in the usual CIFAR ResNets. A width multiplier other than 1 has no torchvision equivalent: ``load``
refuses it with a :class:`~transfer.errors.UserError` naming :func:`load_backbone`, which builds any
architecture as our own ``ResNetBackbone`` (same key names; ``forward`` returns pooled features).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch.nn as nn
import torchvision

from transfer.checkpoint import load_backbone as _load
from transfer.checkpoint import read_export

from transfer.errors import UserError

from .names import check_name
from .publisher import publish
from .store import HttpZoo, LocalZoo, Zoo, default_location, open_zoo, verify_folder
from .store import card_text as _card_text
from .store import get as _get

ZooArg = Optional[Union[Zoo, str]]

__all__ = ["HttpZoo", "LocalZoo", "Zoo", "default_location", "get", "list_models", "load", "load_backbone",
           "open_zoo", "publish", "resolve", "show", "verify_folder"]


def _zoo(zoo: ZooArg) -> Zoo:
    return zoo if isinstance(zoo, Zoo) else open_zoo(zoo)


def list_models(zoo: ZooArg = None) -> Dict[str, Dict[str, Any]]:
    return dict(_zoo(zoo).read_index()["models"])


def show(name: str, zoo: ZooArg = None) -> str:
    """The model card of ``name`` (checked against its sha256)."""
    return _card_text(name, _zoo(zoo))


def get(name: str, out: Optional[Union[str, Path]] = None, zoo: ZooArg = None) -> Path:
    """A local folder with every file of ``name``, each verified (see :func:`model_zoo.store.get`)."""
    return _get(name, Path(out) if out is not None else None, _zoo(zoo))


def resolve(spec: str, zoo: ZooArg = None) -> Path:
    """``NAME`` or ``zoo:NAME`` -> path of its verified ``backbone.safetensors``."""
    name = spec[4:] if spec.startswith("zoo:") else spec
    return get(check_name(name), zoo=zoo) / "backbone.safetensors"


def load_backbone(name: str, zoo: ZooArg = None):
    """``(transfer.backbones.ResNetBackbone, metadata)`` for any published architecture."""
    return _load(resolve(name, zoo))


def load(name: str, zoo: ZooArg = None):
    """A ``torchvision.models.ResNet`` carrying the published weights (``fc`` untrained)."""
    path = resolve(name, zoo)
    sd, meta = read_export(path)
    arch = meta.get("arch") or {}
    depth, width, small = int(arch.get("depth", 0)), float(arch.get("width", 1.0)), bool(arch.get("small"))
    if depth not in (18, 34, 50, 101, 152):
        raise UserError(f"zoo model {name!r}: arch {arch} is not a torchvision ResNet depth")
    if width != 1.0:
        raise UserError(f"zoo model {name!r}: width {width} has no torchvision ResNet equivalent; "
                        f"use model_zoo.load_backbone({name!r}) for a transfer.backbones.ResNetBackbone")
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    if small:
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise UserError(f"zoo model {name!r}: weights do not fit torchvision resnet{depth}: "
                        f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.eval()
    return model
