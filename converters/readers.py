"""Read any recognised checkpoint into the canonical form: ``(state_dict, meta, report)``.

The per-format facts live in :mod:`converters.formats`; this module is the one pipeline they all
go through: open the file safely, detect (or take ``--from``) the layout, pick the online or the
momentum branch, strip its prefix, apply the layout's rename table (and the ``nn.Sequential``
numbering table where keys are numbered), then sort every key into backbone / dropped (with a
reason) / unconverted, deduce the architecture and check every shape, and refuse weights that hold
NaN or inf (named tensor by tensor) unless the caller accepts them explicitly.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from transfer.errors import UserError

from .canonical import COUNTER, StateDict, canonical_order, deduce_arch, is_backbone_key, validate
from .formats import Layout, detect, get_layout
from .loading import load_file
from .report import ConversionReport
from .tables import SEQUENTIAL_TO_TORCHVISION

_HEAD_REST = re.compile(r"^(fc|linear|head|classifier)\.|^(8|9|10)\.")  # classifier/projector on the trunk


def _to_canonical(layout: Layout, rest: str) -> str:
    return SEQUENTIAL_TO_TORCHVISION.rename(rest) if rest[:1].isdigit() else layout.table.rename(rest)


def _present(layout: Layout, prefixes: Tuple[str, ...], keys: List[str]) -> Optional[str]:
    """The first prefix under which backbone keys actually sit (not merely any key)."""
    for p in prefixes:
        if any(k.startswith(p) and is_backbone_key(_to_canonical(layout, k[len(p):])) for k in keys):
            return p
    return None


def _tensor(value: Any, key: str, origin: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise UserError(f"{origin}: key '{key}' holds a {type(value).__name__}, not a tensor")


def split_branch(
    layout: Layout, flat: Mapping[str, Any], momentum: bool, report: ConversionReport, origin: str
) -> StateDict:
    """Sort every key of ``flat`` into the chosen backbone, dropped, or unconverted."""
    keys = list(flat)
    want = layout.momentum if momentum else layout.online
    if momentum and not layout.momentum:
        raise UserError(f"{origin}: {layout.name} checkpoints hold no momentum/teacher/EMA branch; drop --momentum")
    prefix = _present(layout, want, keys)
    if prefix is None:
        raise UserError(
            f"{origin}: no {'momentum' if momentum else 'online'} backbone keys under "
            f"{', '.join(repr(p) for p in want)} ({layout.name} layout); first keys: {keys[:6]}"
        )
    other = _present(layout, layout.online if momentum else layout.momentum, keys)
    other_reason = "online branch (not selected; use --online)" if momentum else "momentum branch (not selected; use --momentum)"
    sd: StateDict = {}
    for key in keys:
        if key.startswith(prefix) and not (other and key.startswith(other) and len(other) > len(prefix)):
            rest = _to_canonical(layout, key[len(prefix):])
            if is_backbone_key(rest):
                if rest.endswith(COUNTER):
                    report.dropped.append((key, "BatchNorm counter num_batches_tracked"))
                    continue
                sd[rest] = _tensor(flat[key], key, origin)
                if rest == key:
                    report.kept += 1
                else:
                    report.renamed.append((key, rest))
                continue
            reason = _head_reason(layout, key)
            if reason is None and _HEAD_REST.match(rest):
                reason = "classifier/projection head on the trunk"
            if reason is None:
                report.unconverted.append(key)
            else:
                report.dropped.append((key, reason))
        elif other and key.startswith(other):
            report.dropped.append((key, other_reason))
        else:
            reason = _head_reason(layout, key)
            if reason is None:
                report.unconverted.append(key)
            else:
                report.dropped.append((key, reason))
    return sd


def _head_reason(layout: Layout, key: str) -> Optional[str]:
    for p, reason in layout.heads:
        if key.startswith(p):
            return reason
    return None


def choose_branch(layout: Layout, momentum: Optional[bool]) -> Tuple[bool, str]:
    """(take the momentum branch?, the sentence saying which branch was taken and why)."""
    if momentum is None:
        take = layout.default_branch == "momentum" and bool(layout.momentum)
        name = "momentum/teacher" if take else "online"
        why = f" ({layout.branch_why})" if layout.branch_why else f" (what {layout.name} evaluates)"
        flag = "--online" if take else ("--momentum" if layout.momentum else "")
        other = f"; {flag} takes the other one" if flag else ""
        return take, f"branch: {name} by default{why}{other}"
    return bool(momentum), f"branch: {'momentum/teacher' if momentum else 'online'} (chosen explicitly)"


def nonfinite_report(sd: Mapping[str, torch.Tensor], names: Mapping[str, str]) -> List[str]:
    """'source key (n NaN, m inf)' for every floating tensor that is not all finite."""
    out = []
    for key, t in sd.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            out.append(f"{names.get(key, key)} ({nan} NaN, {inf} inf of {t.numel()})")
    return out


def read_checkpoint(
    path: Path, source: str = "auto", momentum: Optional[bool] = None, allow_nonfinite: bool = False
) -> Tuple[StateDict, Dict[str, Any], ConversionReport]:
    """Any recognised checkpoint -> (canonical state dict, metadata with ``arch``, report).

    ``momentum``: None takes the branch the method's own evaluation uses (the teacher for DINO,
    the online encoder elsewhere; the report says which), True/False force it. NaN/inf weights are
    refused with their names; ``allow_nonfinite`` turns that into a loud note in the report."""
    path = Path(path)
    origin = str(path)
    top, file_meta, _ = load_file(path)
    if source == "auto":
        layout, flat = detect(top, file_meta, origin)
    else:
        layout = get_layout(source)
        flat = layout.flat(top)
        if flat is None:
            raise UserError(f"{origin}: no state dict where the {layout.name} layout keeps it ({layout.containers or layout.merge})")
    take_momentum, branch_note = choose_branch(layout, momentum)
    report = ConversionReport(path=origin, source=layout.name, branch="momentum" if take_momentum else "online")
    report.notes.append(branch_note)
    sd = split_branch(layout, flat, take_momentum, report, origin)
    if not sd:
        raise UserError(f"{origin}: no backbone weights found by the {layout.name} reader; unconverted: {report.unconverted[:8]}")
    arch = file_meta.get("arch") if isinstance(file_meta.get("arch"), dict) else None
    arch = dict(arch) if arch else deduce_arch(sd, origin)
    if layout.stem_padding is not None and arch.get("small") and "stem_padding" not in arch:
        arch["stem_padding"] = layout.stem_padding
        report.notes.append(
            f"stem: 3x3 conv with padding={layout.stem_padding}, as {layout.name} trains it; rebuilt exactly by "
            f"transfer.backbones.backbone_from_arch({arch}) (a plain torchvision-style file cannot record this)")
    validate(sd, arch, origin)
    sd = canonical_order(sd, arch)
    bad = nonfinite_report(sd, {new: old for old, new in report.renamed})
    if bad:
        listing = ", ".join(bad[:8]) + (f" ... (+{len(bad) - 8} more)" if len(bad) > 8 else "")
        if not allow_nonfinite:
            raise UserError(f"{origin}: {len(bad)} weight tensor(s) hold NaN/inf: {listing}; refusing to convert "
                            "(--allow-nonfinite converts anyway)")
        report.notes.append(f"WARNING: {len(bad)} weight tensor(s) hold NaN/inf (kept, --allow-nonfinite): {listing}")
    report.arch = arch
    meta: Dict[str, Any] = {k: v for k, v in file_meta.items() if k not in ("format", "weights_sha256")}
    meta.update({"arch": arch, "source_format": layout.name, "source_path": origin, "branch": report.branch,
                 "branch_note": branch_note})
    return sd, meta, report


def describe(path: Path, source: str = "auto") -> str:
    """``--inspect``: the detected format, where the weights sit, branches, heads and arch."""
    path = Path(path)
    top, file_meta, kind = load_file(path)
    layout, flat = detect(top, file_meta, str(path)) if source == "auto" else (get_layout(source), get_layout(source).flat(top))
    if flat is None:
        raise UserError(f"{path}: no state dict where the {layout.name} layout keeps it")
    keys = list(flat)
    lines = [
        f"file:      {path} ({kind})",
        f"format:    {layout.name} - {layout.title}",
        f"layout of: {layout.cite}",
    ]
    if isinstance(top, Mapping):
        lines.append(f"top level: {', '.join(map(str, list(top)[:12]))}")
    lines.append(f"tensors:   {len(keys)}")
    lines.append(f"default:   {choose_branch(layout, None)[1]}")
    for label, prefixes in (("online", layout.online), ("momentum", layout.momentum)):
        p = _present(layout, prefixes, keys)
        if p is None:
            lines.append(f"{label:9s}  none")
            continue
        report = ConversionReport(path=str(path), source=layout.name)
        sd = split_branch(layout, flat, label == "momentum", report, str(path))
        try:
            arch = deduce_arch(sd, str(path)) if sd else {}
        except UserError as e:
            arch = {"error": str(e)}
        lines.append(f"{label:9s}  prefix {p!r}: {len(sd)} backbone tensors, arch {arch}")
        if label == "online":
            for reason, ks in report.dropped_by_reason().items():
                lines.append(f"  dropped ({reason}): {len(ks)} keys, e.g. {ks[0]}")
            lines.append(f"  unconverted: {len(report.unconverted)}" + (f" e.g. {report.unconverted[:4]}" if report.unconverted else ""))
    if file_meta:
        lines.append(f"metadata:  {', '.join(sorted(file_meta))}")
    return "\n".join(lines)
