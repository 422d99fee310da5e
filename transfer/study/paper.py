"""Published numbers the study is read against (linear top-1 %, ResNet-50, ImageNet).

UNIGRAD: Tao et al., "Exploring the Equivalence of Siamese Self-Supervised Learning via A Unified
Gradient Framework", CVPR 2022, 100 epochs, one identical setting for every method: original loss /
gradient form without momentum encoder / gradient form with it. ``None``: not reported.
OTHER: original-loss numbers from the related papers for methods UniGrad's table lacks.
DIRECTPRED: Tian, Chen & Ganguli, ICML 2021: DirectPred vs a trained linear / 2-layer predictor.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

UNIGRAD_SOURCE = "Tao et al., CVPR 2022 (UniGrad), ImageNet, ResNet-50, 100 epochs, linear top-1"

#: method -> (original, grad no EMA, grad + EMA)
UNIGRAD: Dict[str, Tuple[Optional[float], Optional[float], Optional[float]]] = {
    "moco": (67.4, 67.6, 70.0),
    "simclr": (62.7, 67.6, 70.0),
    "simsiam": (68.1, 67.9, 70.2),
    "byol": (66.5, 67.9, 70.2),
    "vicreg": (68.6, 67.6, 69.8),
    "barlow_twins": (68.7, 67.6, 70.0),
    "unigrad": (None, None, 70.3),
}
UNIGRAD_NAMES = {"moco": "MoCo", "simclr": "SimCLR", "simsiam": "SimSiam", "byol": "BYOL", "vicreg": "VICReg",
                 "barlow_twins": "Barlow Twins", "unigrad": "UniGrad"}
VARIANT_INDEX = {"orig": 0, "grad": 1, "grad_ema": 2}

#: method -> (original-loss linear top-1, source); ImageNet ResNet-50 100 epochs unless said
OTHER: Dict[str, Tuple[float, str]] = {
    "simclr_abs": (68.71, "Garrido et al., ICLR 2023"),
    "vicreg_ctr": (67.92, "Garrido et al., ICLR 2023"),
    "directpred": (64.4, "Tian et al., ICML 2021 (60 epochs)"),
}

#: DirectPred vs trained predictors: setting -> (DirectPred, trained linear, trained 2-layer)
DIRECTPRED: Dict[str, Tuple[float, float, float]] = {
    "STL-10, 100 ep": (77.86, 74.51, 78.85),
    "ImageNet, 60 ep": (64.4, 59.4, 64.7),
    "ImageNet, 300 ep": (72.4, 69.9, 72.5),
}


def published(method: str, variant: str) -> Optional[float]:
    row = UNIGRAD.get(method)
    return None if row is None else row[VARIANT_INDEX[variant]]


def paper_spread(variant: str, methods) -> Optional[float]:
    vals = [published(m, variant) for m in methods]
    vals = [v for v in vals if v is not None]
    return (max(vals) - min(vals)) if len(vals) >= 2 else None


def paper_ema_gain(methods) -> Dict[str, float]:
    """grad + EMA minus grad without EMA, per method, where both are published."""
    out = {}
    for m in methods:
        a, b = published(m, "grad"), published(m, "grad_ema")
        if a is not None and b is not None:
            out[m] = b - a
    return out


def paper_grad_vs_orig(methods) -> Dict[str, float]:
    out = {}
    for m in methods:
        a, b = published(m, "orig"), published(m, "grad")
        if a is not None and b is not None:
            out[m] = b - a
    return out
