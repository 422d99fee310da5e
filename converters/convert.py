"""One conversion end to end: read (any format) -> canonical -> write (one target) -> report."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from transfer.backbones import ResNetBackbone, backbone_from_arch
from transfer.errors import UserError

from .loading import resolve_input
from .readers import read_checkpoint
from .report import ConversionReport
from .writers import get_writer


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def refuse_overwriting_input(src: Path, outputs: Any) -> None:
    """An output that is the input (same path, a symlink or a hard link to it) is refused up front."""
    src = resolve_input(src)
    for out in outputs:
        if _same_file(src, Path(out)):
            raise UserError(f"convert: output {out} is the input checkpoint {src} itself; "
                            "choose another -o path (nothing was written)")


def convert(
    path: Path, to: str, out: Path, source: str = "auto", momentum: Optional[bool] = None, strict: bool = False,
    allow_nonfinite: bool = False,
) -> ConversionReport:
    """Convert ``path`` into ``to``'s format at ``out``; with ``strict``, leftovers are an error
    (checked before anything is written). The output may not be the input file."""
    writer = get_writer(to)
    refuse_overwriting_input(Path(path), writer.outputs(Path(out)))
    sd, meta, report = read_checkpoint(path, source=source, momentum=momentum, allow_nonfinite=allow_nonfinite)
    if strict:
        report.check_strict()
    converted, renames = writer.convert(sd, meta["arch"])
    written = writer.save(Path(out), converted, meta)
    report.compose(renames, to)
    report.outputs = [str(p) for p in written]
    return report


def load_any_backbone(
    path: Path, momentum: Optional[bool] = None, source: str = "auto"
) -> Tuple[ResNetBackbone, Dict[str, Any]]:
    """Rebuild a :class:`ResNetBackbone` from any checkpoint the readers recognise (``momentum=None``:
    the branch the method evaluates, see ``meta["branch_note"]``)."""
    sd, meta, report = read_checkpoint(path, source=source, momentum=momentum)
    with torch.device("meta"):  # no random init of weights that are overwritten at once
        bb = backbone_from_arch(meta["arch"])
    missing, unexpected = bb.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:  # cannot happen after validate(); kept as a guard
        raise UserError(f"{path}: weights do not fit {meta['arch']}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    meta["report"] = report
    return bb, meta
