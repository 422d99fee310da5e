"""Mean ± std over seeds and paired differences with a 95 % Student-t interval (pure functions).

For a claim "A differs from B" measured on the same seeds, the per-seed differences
``d_s = A_s - B_s`` give ``mean(d) ± t_{0.975, n-1} * sd(d) / sqrt(n)`` (``sd`` with ``n - 1``).
The label is mechanical: the interval excludes 0 (positive or negative) or includes it.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Dict, Mapping, Optional, Sequence

#: t_{0.975, df} for df = 1..30 (two-sided 95 %), used when scipy is absent; 1.96 beyond
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t_quantile(df: int) -> float:
    """The two-sided 95 % quantile ``t_{0.975, df}``."""
    try:
        from scipy.stats import t  # optional: scipy is not a dependency (fallback below)

        return float(t.ppf(0.975, df))
    except ImportError:
        return T975[df - 1] if df <= len(T975) else 1.96


def mean_std(values: Sequence[Optional[float]]) -> Dict[str, Any]:
    vals = [float(v) for v in values if v is not None]
    return {"mean": statistics.fmean(vals) if vals else None,
            "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals)}


def paired_interval(a: Mapping[int, float], b: Mapping[int, float]) -> Dict[str, Any]:
    """``a - b`` over the seeds both have: mean, 95 % t interval and its label."""
    seeds = sorted(set(a) & set(b))
    d = [float(a[s]) - float(b[s]) for s in seeds]
    out: Dict[str, Any] = {"seeds": seeds, "diffs": d, "n": len(d), "mean": statistics.fmean(d) if d else None,
                           "lo": None, "hi": None}
    if len(d) >= 2:
        half = t_quantile(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
        out["lo"], out["hi"] = out["mean"] - half, out["mean"] + half
    out["label"] = label(out["lo"], out["hi"])
    return out


def label(lo: Optional[float], hi: Optional[float]) -> str:
    if lo is None or hi is None:
        return "fewer than 2 paired seeds: no interval"
    if lo > 0:
        return "interval excludes 0 (positive)"
    if hi < 0:
        return "interval excludes 0 (negative)"
    return "interval includes 0"
