"""The one input-normalisation rule of every fine-tuning engine (detection and segmentation)."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from ..data.datasets import IMAGENET_MEAN, IMAGENET_STD


def resolve_mean_std(meta: Dict[str, Any]) -> Tuple[List[float], List[float], str]:
    """The checkpoint's normalisation (``meta["mean"]`` / ``["std"]``, 3 channels or 1 grey channel
    repeated, on the 0-1 or the 0-255 scale) as 0-1 scale RGB lists, else ImageNet's; with where it
    came from (``checkpoint``, ``checkpoint (grey)``, ``imagenet``)."""
    mean, std = meta.get("mean"), meta.get("std")
    if isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple)) and len(mean) == len(std) and len(mean) in (1, 3):
        scale = 255.0 if max(float(v) for v in mean) > 1.5 else 1.0
        mean, std = [float(v) / scale for v in mean], [float(v) / scale for v in std]
        return (mean * 3, std * 3, "checkpoint (grey)") if len(mean) == 1 else (mean, std, "checkpoint")
    return list(IMAGENET_MEAN), list(IMAGENET_STD), "imagenet"
