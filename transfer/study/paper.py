"""Published numbers the study is read against (printed beside the measured table, never compared in code).

UNIGRAD: Tao et al., "Exploring the Equivalence of Siamese Self-Supervised Learning via A Unified
Gradient Framework", CVPR 2022, Table 1 (``shared/docs/seeds.md`` section 1). DIRECTPRED: Tian, Chen &
Ganguli, "Understanding Self-Supervised Learning Dynamics without Contrastive Pairs", ICML 2021
(seeds.md section 3).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

UNIGRAD_SOURCE = "Tao et al., CVPR 2022 (UniGrad), ImageNet, ResNet-50, 100 epochs, linear top-1"
#: method -> (original, grad no EMA, grad + EMA); None: not reported. Their MoCo has a 65,536 queue.
UNIGRAD: Dict[str, Tuple[Optional[float], Optional[float], Optional[float]]] = {
    "moco": (67.4, 67.6, 70.0), "simclr": (62.7, 67.6, 70.0), "simsiam": (68.1, 67.9, 70.2),
    "byol": (66.5, 67.9, 70.2), "vicreg": (68.6, 67.6, 69.8), "barlow_twins": (68.7, 67.6, 70.0),
    "unigrad": (None, None, 70.3),
}

DIRECTPRED_SOURCE = "Tian et al., ICML 2021, linear top-1"
#: setting -> (DirectPred, trained linear predictor, trained 2-layer predictor)
DIRECTPRED: Dict[str, Tuple[float, float, float]] = {
    "STL-10, 100 ep": (77.86, 74.51, 78.85),
    "ImageNet, 60 ep": (64.4, 59.4, 64.7),
    "ImageNet, 300 ep": (72.4, 69.9, 72.5),
}
