"""The canonical form: a torchvision-named ResNet state dict (no ``fc``, no BN counters) + metadata.

Every reader produces it and every writer consumes it; nothing converts A to B directly.
``num_batches_tracked`` is left out on purpose: it is a training counter, not a weight, detectron2's
FrozenBN has none, and ``BatchNorm``'s ``_load_from_state_dict`` fills it in on load. When no
metadata says which ResNet the weights belong to, :func:`deduce_arch` reads it off the weights
(stem kernel -> small stem, stem width -> width multiplier, blocks per stage -> depth), so that
``transfer.backbones.backbone_from_arch(arch)`` rebuilds the network.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Dict, Mapping, Tuple

import torch

from transfer.backbones import ArchSpec, ResNetBackbone
from transfer.errors import UserError

StateDict = Dict[str, torch.Tensor]

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
BACKBONE_KEY = re.compile(
    rf"^(conv1\.weight|bn1\.{_BN}|layer[1-4]\.\d+\.(conv[1-3]\.weight|bn[1-3]\.{_BN}"
    rf"|downsample\.0\.weight|downsample\.1\.{_BN}))$"
)
COUNTER = "num_batches_tracked"

# (block kind, blocks per stage) -> depth, as in torchvision models/resnet.py
_DEPTHS: Dict[Tuple[str, Tuple[int, ...]], int] = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}
SUPPORTED_DEPTHS = (18, 34, 50)  # what transfer.backbones.ResNetBackbone builds


def is_backbone_key(key: str) -> bool:
    """True for a torchvision ResNet parameter/buffer name other than the classifier ``fc``."""
    return BACKBONE_KEY.match(key) is not None


def deduce_arch(sd: Mapping[str, torch.Tensor], origin: str = "checkpoint") -> Dict[str, Any]:
    """The ``arch`` dict (depth, small, width, zero_init_residual) that fits these weights."""
    stem = sd.get("conv1.weight")
    if stem is None or stem.dim() != 4:
        raise UserError(f"{origin}: no ResNet stem 'conv1.weight' among the backbone keys")
    k = stem.shape[-1]
    if k not in (3, 7):
        raise UserError(f"{origin}: stem kernel {k}x{k} is neither torchvision's 7x7 nor the small 3x3")
    kind = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
    counts = []
    for stage in range(1, 5):
        idx = {int(m.group(1)) for key in sd for m in [re.match(rf"^layer{stage}\.(\d+)\.", key)] if m}
        counts.append(max(idx) + 1 if idx else 0)
    depth = _DEPTHS.get((kind, tuple(counts)))
    if depth is None:
        raise UserError(f"{origin}: {kind} blocks per stage {counts} match no standard ResNet depth")
    if depth not in SUPPORTED_DEPTHS:
        raise UserError(f"{origin}: ResNet-{depth} weights found; transfer.backbones builds depths {SUPPORTED_DEPTHS}")
    width = stem.shape[0] / 64.0
    return {"depth": depth, "small": k == 3, "width": width, "zero_init_residual": True}


@lru_cache(maxsize=16)
def _expected(depth: int, small: bool, width: float) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
    with torch.device("meta"):
        bb = ResNetBackbone(ArchSpec(depth, small, width))
    return tuple((k, tuple(v.shape)) for k, v in bb.state_dict().items() if not k.endswith(COUNTER))


def expected_shapes(arch: Mapping[str, Any]) -> Dict[str, Tuple[int, ...]]:
    """Canonical key -> shape for an arch dict (built on the meta device: no memory, no init)."""
    return dict(_expected(int(arch["depth"]), bool(arch.get("small", False)), float(arch.get("width", 1.0))))


def validate(sd: Mapping[str, torch.Tensor], arch: Mapping[str, Any], origin: str) -> None:
    """Exactly the keys of ``arch``'s backbone, each with its shape; else one clear error."""
    want = expected_shapes(arch)
    for key, shape in want.items():
        if key in sd and tuple(sd[key].shape) != shape:
            raise UserError(
                f"{origin}: shape mismatch at '{key}': checkpoint has {tuple(sd[key].shape)}, "
                f"ResNet-{arch['depth']} (small={arch.get('small')}, width={arch.get('width')}) expects {shape}"
            )
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
    if missing or extra:
        raise UserError(
            f"{origin}: weights do not form a ResNet-{arch['depth']} backbone: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}"
        )


def canonical_order(sd: Mapping[str, torch.Tensor], arch: Mapping[str, Any]) -> StateDict:
    """The state dict in the backbone's own key order (stable files, readable reports)."""
    return {k: sd[k] for k in expected_shapes(arch)}
