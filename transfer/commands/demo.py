"""``transfer demo``: the end-to-end demo on Fashion-MNIST (see :mod:`transfer.demo`)."""
from __future__ import annotations

import argparse

from ..demo import DEFAULT_STAGES, STAGES, run_demo


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end demo on Fashion-MNIST (CPU): pretrain, k-NN, probes, "
                                    "detection, segmentation, zoo")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                   help=f"comma-separated subset of {','.join(STAGES)} (default: all but knn, which probe includes)")
    p.add_argument("--recipe", default="demo_fmnist", help="pretraining recipe (name or YAML path)")
    p.add_argument("--quick", action="store_true", help="shorter probe sweeps and transfer schedules")
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", type=int, default=None,
                   help="detection fine-tuning runs side by side in single-thread workers (default 2 on >= 2 cores; 1: in turn)")
    p.add_argument("overrides", nargs="*", help="pretraining overrides, key=value")
    p.set_defaults(func=lambda a: run_demo(a.out, [s for s in a.stages.split(",") if s], a.recipe,
                                           a.overrides, a.device, a.quick, a.jobs))
