"""timm writer: timm ``resnet{18,34,50}`` names (the same as torchvision's), as ``model.safetensors``.

Key names follow huggingface/pytorch-image-models ``timm/models/resnet.py`` (``conv1``, ``bn1``,
``layer1-4``, ``downsample.0/1``; ``fc`` left out, so build the model with ``num_classes=0``). The
file is a safetensors with ``{"format": "pt"}`` metadata as on the Hugging Face hub, loadable by
``timm.create_model("resnet50", num_classes=0, pretrained=True,
pretrained_cfg_overlay=dict(file=PATH))`` or ``timm.models.load_checkpoint``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping

import torch
from safetensors.torch import save_file

from transfer.checkpoint import atomic_write
from transfer.errors import UserError

from ..tables import IDENTITY
from .base import Writer


class TimmWriter(Writer):
    name = "timm"
    title = "timm ResNet"
    suffix = ".safetensors"
    reads_back_as = "timm"
    table = IDENTITY

    def check_arch(self, arch: Mapping[str, Any]) -> None:
        self._refuse_small(arch)
        if float(arch.get("width", 1.0)) != 1.0:
            raise UserError(f"timm: resnet{arch['depth']} has no width multiplier (weights have width {arch['width']})")

    def save(self, out: Path, converted: Dict[str, torch.Tensor], meta: Mapping[str, Any]) -> List[Path]:
        tensors = {k: v.contiguous() for k, v in converted.items()}
        header = {
            "format": "pt",
            "timm_model": f"resnet{meta['arch']['depth']}",
            "transfer_source": json.dumps({k: meta.get(k) for k in ("source_format", "source_path", "branch")}),
        }
        atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata=header))
        return [out]
