"""torchvision writer: the canonical form as is, ``torch.save`` of a plain dict of tensors.

Loads with ``torchvision.models.resnetXX().load_state_dict(sd, strict=False)``, missing only
``fc.weight``/``fc.bias`` (torchvision ``models/resnet.py`` names); a small-stem or width != 1
backbone has no torchvision constructor and is rebuilt with ``transfer.backbones`` instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping

import torch

from transfer.checkpoint import atomic_write

from ..tables import IDENTITY
from .base import Writer


class TorchvisionWriter(Writer):
    name = "torchvision"
    title = "torchvision ResNet"
    suffix = ".pth"
    reads_back_as = "torchvision"
    table = IDENTITY

    def save(self, out: Path, converted: Dict[str, torch.Tensor], meta: Mapping[str, Any]) -> List[Path]:
        tensors = {k: v.contiguous() for k, v in converted.items()}
        atomic_write(out, lambda tmp: torch.save(tensors, tmp))
        return [out]
