"""The conversion report: every rename, every dropped key (with its reason), every leftover.

Modelled on detectron2 ``tools/convert-torchvision-to-d2.py``, which prints each ``old -> new``
rename and the keys it did not convert; here the same facts are returned as data, so tests and
the CLI read one object, and ``--strict`` turns leftovers into an error.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from transfer.errors import UserError

_SHOW = 8  # keys listed per group in the short form


@dataclass
class ConversionReport:
    """What a read (and optionally a write) did to each key of the source checkpoint."""

    path: str
    source: str  # detected or forced format name
    branch: str = "online"  # "online" or "momentum"
    target: Optional[str] = None  # writer name, once written
    renamed: List[Tuple[str, str]] = field(default_factory=list)  # (source key, final key)
    kept: int = 0  # keys whose name did not change
    dropped: List[Tuple[str, str]] = field(default_factory=list)  # (source key, reason)
    unconverted: List[str] = field(default_factory=list)  # keys nobody claimed: the leftovers
    arch: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    outputs: List[str] = field(default_factory=list)

    @property
    def converted(self) -> int:
        return self.kept + len(self.renamed)

    def dropped_by_reason(self) -> "OrderedDict[str, List[str]]":
        groups: "OrderedDict[str, List[str]]" = OrderedDict()
        for key, reason in self.dropped:
            groups.setdefault(reason, []).append(key)
        return groups

    def compose(self, writer_renames: List[Tuple[str, str]], target: str) -> None:
        """Chain the writer's canonical->target renames onto the reader's source->canonical ones."""
        back = {new: old for old, new in self.renamed}
        to_target = dict(writer_renames)
        chained: List[Tuple[str, str]] = []
        canon_keys = set(back)
        for old, new in self.renamed:
            chained.append((old, to_target.get(new, new)))
        for canon, tgt in writer_renames:
            if canon not in canon_keys and canon != tgt:
                chained.append((canon, tgt))
                self.kept -= 1
        self.renamed = chained
        self.target = target

    def check_strict(self) -> None:
        """``--strict``: any leftover key is an error (dropped heads are expected, leftovers not)."""
        if self.unconverted:
            raise UserError(
                f"{self.path}: --strict: {len(self.unconverted)} key(s) left unconverted "
                f"({self.source} reader): {', '.join(self.unconverted[:_SHOW])}"
                + (" ..." if len(self.unconverted) > _SHOW else "")
            )

    def format(self, verbose: bool = True) -> str:
        """Human-readable text; ``verbose`` lists every rename like detectron2's converter does."""
        lines = [
            f"source: {self.path}",
            f"format: {self.source} (branch: {self.branch})",
            f"arch:   {self.arch}",
        ]
        if self.target:
            lines.append(f"target: {self.target} -> {', '.join(self.outputs) or '(not written)'}")
        lines.append(f"converted: {self.converted} keys ({len(self.renamed)} renamed, {self.kept} unchanged)")
        if verbose:
            lines += [f"  {old} -> {new}" for old, new in self.renamed]
        for reason, keys in self.dropped_by_reason().items():
            shown = keys if verbose else keys[:_SHOW]
            more = "" if len(shown) == len(keys) else f" ... (+{len(keys) - len(shown)})"
            lines.append(f"dropped ({reason}): {len(keys)} keys: {', '.join(shown)}{more}")
        if self.unconverted:
            lines.append(f"UNCONVERTED: {len(self.unconverted)} keys: {', '.join(self.unconverted)}")
        else:
            lines.append("unconverted: none")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
