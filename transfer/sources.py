"""Checkpoint sources: what every ``--ckpt`` value resolves to (probes, ``transfer run``, the study).

``--ckpt`` forms:
- a run folder or ``backbone.safetensors`` exported by ``transfer`` (:func:`transfer.checkpoint.load_backbone`);
- any other checkpoint the converters read (:func:`converters.load_any_backbone`);
- ``random:ARCH[:WIDTH[:SEED]]`` -- a random-init baseline, e.g. ``random:small_resnet18:0.25``;
- ``pixels`` -- raw pixels, normalised and flattened (the no-learning baseline);
- ``zoo:NAME`` -- a model published in the zoo (``$TRANSFER_ZOO``), see :mod:`model_zoo`.
Each source has an ``identity`` (the weights' sha256, or ``pixels``) that keys the feature cache.

Where this sits (issue 16): above ``converters`` and ``model_zoo``, beside ``probes`` and
``transfer.tasks``, which both import it. A scheme registry in the core that the zoo fills on
import (detectron2's way) was the other choice; it was not taken because resolution also needs
the converters (a layer above the core) for foreign checkpoints, and because ``zoo:`` would then
resolve only after something happened to import ``model_zoo`` -- an order dependency no reader of
a call site can see. Here both are plain top-level imports.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from safetensors import safe_open

from transfer.backbones import ResNetBackbone, build_backbone
from transfer.checkpoint import EXPORT_FORMAT, load_backbone, weights_sha256
from transfer.errors import UserError
from converters import load_any_backbone
from model_zoo import resolve as zoo_resolve


@dataclass
class FeatureSource:
    """A feature extractor and what identifies it."""

    kind: str  # "backbone" | "random" | "pixels"
    spec: str  # what the user passed
    identity: str  # weights sha256, or "pixels"
    backbone: Optional[ResNetBackbone] = None
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def input_size(self) -> Optional[int]:
        """The pixel size the backbone was trained at, when the checkpoint says."""
        v = self.meta.get("input_size")
        return int(v) if isinstance(v, (int, float)) and v > 0 else None

    def describe(self) -> Dict[str, Any]:
        keys = ("method", "form", "dataset", "arch", "input_size", "epochs", "source_format")
        d = {"kind": self.kind, "spec": self.spec, "weights_sha256": self.identity}
        d.update({k: self.meta[k] for k in keys if k in self.meta})
        if self.backbone is not None:
            d["feature_dim"] = self.backbone.feature_dim
        return d


def _is_own_export(path: Path) -> bool:
    """True for a run folder with ``backbone.safetensors`` or a safetensors file in our format."""
    if path.is_dir():
        return (path / "backbone.safetensors").is_file()
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == EXPORT_FORMAT
    except Exception:
        return False


def state_sha256(sd: Dict[str, torch.Tensor]) -> str:
    """:func:`transfer.checkpoint.weights_sha256`, falling back to a 0-dim-safe equivalent
    (0-dim tensors such as BN's ``num_batches_tracked`` hashed as 1-element tensors)."""
    try:
        return weights_sha256(sd)
    except RuntimeError:
        return weights_sha256({k: (v.reshape(1) if v.dim() == 0 else v) for k, v in sd.items()})


def random_backbone(arch: str, width: float = 1.0, seed: int = 0) -> ResNetBackbone:
    """A random-init backbone, the same weights for the same (arch, width, seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_backbone(arch, width=width)


def _load_own(path: Path):
    """:func:`load_backbone`, with a shape mismatch (arch in the metadata vs the weights) as a
    :class:`UserError` naming the file rather than torch's RuntimeError."""
    try:
        return load_backbone(path)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise UserError(f"{path}: weights do not fit the architecture in its metadata ({first[:200]})") from None


def load_source(spec: str) -> FeatureSource:
    """Resolve a ``--ckpt`` value (see module docstring); bad values raise :class:`UserError`."""
    if spec == "pixels":
        return FeatureSource("pixels", spec, "pixels")
    if spec.startswith("zoo:"):  # model zoo (issue 7): a published model, fetched and sha256-verified
        src = load_source(str(zoo_resolve(spec)))
        src.spec = spec
        return src
    if spec.startswith("random:"):
        parts = spec.split(":")
        if len(parts) < 2 or len(parts) > 4 or not parts[1]:
            raise UserError(f"--ckpt {spec!r}: expected random:ARCH[:WIDTH[:SEED]], e.g. random:small_resnet18:0.25")
        try:
            width = float(parts[2]) if len(parts) > 2 else 1.0
            seed = int(parts[3]) if len(parts) > 3 else 0
        except ValueError:
            raise UserError(f"--ckpt {spec!r}: WIDTH must be a number and SEED an integer") from None
        bb = random_backbone(parts[1], width, seed)
        meta = {"method": "random-init", "arch": bb.arch_dict(), "seed": seed}
        return FeatureSource("random", spec, state_sha256(bb.state_dict()), bb, meta)
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"--ckpt: checkpoint not found: {path} (or use 'pixels' / 'random:ARCH[:WIDTH]')")
    if _is_own_export(path):
        bb, meta = _load_own(path)
    else:
        bb, meta = load_any_backbone(path, momentum=None)  # each method's own evaluation branch (DINO: teacher)
    meta = {k: (json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v) for k, v in dict(meta).items()}
    ident = meta.get("weights_sha256") or state_sha256(bb.state_dict())
    return FeatureSource("backbone", spec, str(ident), bb, meta)
