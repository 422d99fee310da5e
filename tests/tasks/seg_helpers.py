"""Shared helpers for the segmentation tests: tiny settings and synthetic folders."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

TINY_CKPT = "random:small_resnet18:0.125"


def tiny(**over: Any) -> Dict[str, Any]:
    """Settings that run a task's whole pipeline in about a second on one CPU thread."""
    s = dict(batch_size=2, crop_size=32, scale=None, test_scale=None, ratio_range=[0.75, 1.25], workers=0,
             ckpt_every=0, eval_limit=3, report_images=2, progress=False)
    s.update(over)
    return s


def shapes(root: Path, layout: str, **kw) -> Path:
    from transfer.data.segmentation import write_shapes

    args = dict(n_train=4, n_val=3, size=40, seed=1)
    args.update(kw)
    return write_shapes(root, layout, **args)
