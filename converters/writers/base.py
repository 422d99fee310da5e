"""What every writer shares: a rename table from the canonical form, a file format, a fragment."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import torch

from transfer.errors import UserError

from ..tables import RenameTable

Renames = List[Tuple[str, str]]


class Writer:
    """Canonical state dict -> target names (pure, table-driven) -> file(s) on disk."""

    name: str = ""
    title: str = ""
    suffix: str = ""  # default file suffix of the weights
    reads_back_as: str = ""  # the reader name that recognises the written file
    table: RenameTable
    fragment_suffix: str = ""  # config fragment written next to the weights, if any

    def outputs(self, out: Path) -> List[Path]:
        """Every path :meth:`save` writes for ``out`` (checked against the input before writing)."""
        return [out, fragment_path(out, self.fragment_suffix)] if self.fragment_suffix else [out]

    def check_arch(self, arch: Mapping[str, Any]) -> None:
        """Refuse an architecture the target library cannot build (one clear error)."""

    def convert(self, sd: Mapping[str, torch.Tensor], arch: Mapping[str, Any]) -> Tuple[Dict[str, torch.Tensor], Renames]:
        """Rename every canonical key through the table; (target state dict, [(old, new)])."""
        self.check_arch(arch)
        pairs = self.table.apply(list(sd))
        return {new: sd[old] for old, new in pairs}, pairs

    def save(self, out: Path, converted: Dict[str, torch.Tensor], meta: Mapping[str, Any]) -> List[Path]:
        """Write the weights (and any config fragment); return the paths written."""
        raise NotImplementedError

    def _refuse_small(self, arch: Mapping[str, Any]) -> None:
        if arch.get("small"):
            raise UserError(
                f"{self.name}: the small-image stem (3x3 conv, no max-pool) has no {self.title} equivalent; "
                "use --to torchvision and load it with transfer.backbones"
            )


def fragment_path(out: Path, suffix: str) -> Path:
    """``r50.pkl`` -> ``r50.yaml``: the config fragment sits next to the weights."""
    return out.with_name(out.name.rsplit(".", 1)[0] + suffix) if "." in out.name else out.with_name(out.name + suffix)
