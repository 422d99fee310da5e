"""detectron2 writer: MoCo's renaming into a ``.pkl`` plus the config fragment it needs.

Follows facebookresearch/moco ``detection/convert-pretrain-to-detectron2.py`` (and detectron2
``tools/convert-torchvision-to-d2.py``): keys renamed by :data:`converters.tables.TORCHVISION_TO_D2`
(stem, res2-res5, ``conv{n}.norm``, ``shortcut``), values as numpy arrays, pickled as
``{"model": ..., "__author__": ..., "matching_heuristics": True}``. The YAML fragment carries what
torchvision-style weights need in detectron2: RGB input, ``PIXEL_MEAN``/``PIXEL_STD`` in 0-255
scale, ``RESNETS.STRIDE_IN_1X1: False``, the depth, the norm (SyncBN, as in MoCo's
``detection/configs/Base-RCNN-C4-BN.yaml``) and, for ResNet-18/34, ``RES2_OUT_CHANNELS: 64``.
"""
from __future__ import annotations

import json

import pickle
from pathlib import Path
from typing import Any, Dict, List, Mapping

import torch

from transfer.checkpoint import atomic_write, atomic_write_text

from ..tables import TORCHVISION_TO_D2
from .base import Writer, fragment_path

PIXEL_MEAN = [123.675, 116.28, 103.53]  # ImageNet RGB mean, 0-255 scale
PIXEL_STD = [58.395, 57.12, 57.375]


class Detectron2Writer(Writer):
    name = "detectron2"
    title = "detectron2 ResNet (BasicStem)"
    suffix = ".pkl"
    reads_back_as = "detectron2"
    fragment_suffix = ".yaml"
    table = TORCHVISION_TO_D2
    norm = "SyncBN"

    def check_arch(self, arch: Mapping[str, Any]) -> None:
        self._refuse_small(arch)

    def save(self, out: Path, converted: Dict[str, torch.Tensor], meta: Mapping[str, Any]) -> List[Path]:
        model = {k: v.detach().cpu().contiguous().numpy() for k, v in converted.items()}
        obj = {
            "model": model,
            "__author__": f"transfer-ssl (from {meta.get('source_format', '?')}: {meta.get('source_path', '?')})",
            "matching_heuristics": True,
        }

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                pickle.dump(obj, f, protocol=4)

        atomic_write(out, write)
        frag = fragment_path(out, self.fragment_suffix)
        atomic_write_text(frag, self.fragment(out, meta["arch"]))
        return [out, frag]

    def fragment(self, weights: Path, arch: Mapping[str, Any]) -> str:
        depth, width = int(arch["depth"]), float(arch.get("width", 1.0))
        stem = int(round(64 * width))
        res2 = stem * (4 if depth >= 50 else 1)
        lines = [
            "# detectron2 config fragment for torchvision-style ResNet weights (written by `transfer convert`)",
            "MODEL:",
            f'  WEIGHTS: {json.dumps(str(Path(weights).resolve()))}',  # a JSON string is a valid YAML scalar
            f"  PIXEL_MEAN: {PIXEL_MEAN}",
            f"  PIXEL_STD: {PIXEL_STD}",
            "  RESNETS:",
            f"    DEPTH: {depth}",
            "    STRIDE_IN_1X1: False",
            f'    NORM: "{self.norm}"',
            f"    STEM_OUT_CHANNELS: {stem}",
            f"    RES2_OUT_CHANNELS: {res2}",
        ]
        if depth >= 50:
            lines.append(f"    WIDTH_PER_GROUP: {stem}")
        lines += ["INPUT:", '  FORMAT: "RGB"', ""]
        return "\n".join(lines)
