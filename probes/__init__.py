"""Transfer probes: weighted k-NN, linear and few-shot evaluation of any loadable backbone.

Python API (all accept torch tensors or numpy arrays for features and labels):
- :func:`probes.knn.weighted_knn` -- DINO's weighted k-NN for several k from one FAISS search;
- :func:`probes.linear.linear_probe` -- L-BFGS logistic regression with an L2 sweep;
- :func:`probes.linear_sgd.linear_eval_frozen` -- the standard augmented protocol (SGD / LARS);
- :func:`probes.fewshot.fewshot_eval` and :func:`probes.fewshot.lowshot_curve`;
- :func:`probes.features.extract_features` / :func:`probes.features.cached_features`;
- :func:`probes.run.run_all` -- all three probes from a checkpoint spec and a dataset, with reports.
"""
from __future__ import annotations

from typing import Any

__all__ = ["run_all", "run_probe", "weighted_knn", "linear_probe", "fewshot_eval", "lowshot_curve",
           "extract_features", "cached_features"]

_LAZY = {
    "run_all": "probes.run", "run_probe": "probes.run", "weighted_knn": "probes.knn",
    "linear_probe": "probes.linear", "fewshot_eval": "probes.fewshot",
    "lowshot_curve": "probes.fewshot", "extract_features": "probes.features",
    "cached_features": "probes.features",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'probes' has no attribute {name!r}")
