"""mmsegmentation / mmdetection writer: ``backbone.``-prefixed ResNet (v1b) weights + init_cfg.

Key names follow open-mmlab/mmsegmentation ``mmseg/models/backbones/resnet.py`` ``ResNet``
(``conv1``, ``bn1``, ``layer1-4``, ``downsample.0/1``; ``style='pytorch'``: stride on the 3x3 conv,
as torchvision), i.e. ``type='ResNet'`` — not ``ResNetV1c``, whose deep stem (``stem.0-8``) does
not fit torchvision weights. Written with ``torch.save`` as a plain dict of tensors (no objects,
loads under ``weights_only=True``); the Python fragment sets ``init_cfg=dict(type='Pretrained',
checkpoint=..., prefix='backbone.')`` so mmengine strips the prefix, plus the RGB
``data_preprocessor`` mean/std.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping

import torch

from transfer.checkpoint import atomic_write, atomic_write_text

from ..tables import prefix_table
from .base import Writer, fragment_path


class MMSegWriter(Writer):
    name = "mmseg"
    title = "mmsegmentation/mmdetection ResNet (v1b)"
    suffix = ".pth"
    reads_back_as = "mmseg"
    fragment_suffix = "_mm_config.py"
    table = prefix_table("backbone.")

    def check_arch(self, arch: Mapping[str, Any]) -> None:
        self._refuse_small(arch)

    def save(self, out: Path, converted: Dict[str, torch.Tensor], meta: Mapping[str, Any]) -> List[Path]:
        tensors = {k: v.contiguous() for k, v in converted.items()}
        atomic_write(out, lambda tmp: torch.save(tensors, tmp))
        frag = fragment_path(out, self.fragment_suffix)
        atomic_write_text(frag, self.fragment(out, meta["arch"]))
        return [out, frag]

    def fragment(self, weights: Path, arch: Mapping[str, Any]) -> str:
        depth, width = int(arch["depth"]), float(arch.get("width", 1.0))
        ch = int(round(64 * width))
        return "\n".join([
            "# mmsegmentation / mmdetection config fragment (written by `transfer convert`)",
            "norm_cfg = dict(type='SyncBN', requires_grad=True)",
            "model = dict(",
            "    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),",
            "    backbone=dict(",
            f"        type='ResNet', depth={depth}, style='pytorch', deep_stem=False, avg_down=False,",
            f"        stem_channels={ch}, base_channels={ch}, norm_cfg=norm_cfg,",
            f"        init_cfg=dict(type='Pretrained', checkpoint={str(Path(weights).resolve())!r}, prefix='backbone.')))",
            "",
        ])
