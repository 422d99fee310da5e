"""One conversion end to end: read (any format) -> canonical -> write (one target) -> report."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from transfer.backbones import ResNetBackbone, backbone_from_arch
from transfer.errors import UserError

from .readers import read_checkpoint
from .report import ConversionReport
from .writers import get_writer


def convert(
    path: Path, to: str, out: Path, source: str = "auto", momentum: bool = False, strict: bool = False
) -> ConversionReport:
    """Convert ``path`` into ``to``'s format at ``out``; with ``strict``, leftovers are an error
    (checked before anything is written)."""
    writer = get_writer(to)
    sd, meta, report = read_checkpoint(path, source=source, momentum=momentum)
    if strict:
        report.check_strict()
    converted, renames = writer.convert(sd, meta["arch"])
    written = writer.save(Path(out), converted, meta)
    report.compose(renames, to)
    report.outputs = [str(p) for p in written]
    return report


def load_any_backbone(path: Path, momentum: bool = False, source: str = "auto") -> Tuple[ResNetBackbone, Dict[str, Any]]:
    """Rebuild a :class:`ResNetBackbone` from any checkpoint the readers recognise."""
    sd, meta, report = read_checkpoint(path, source=source, momentum=momentum)
    with torch.device("meta"):  # no random init of weights that are overwritten at once
        bb = backbone_from_arch(meta["arch"])
    missing, unexpected = bb.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:  # cannot happen after validate(); kept as a guard
        raise UserError(f"{path}: weights do not fit {meta['arch']}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    meta["report"] = report
    return bb, meta
