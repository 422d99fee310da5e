"""Worker for ``test_ddp_every_method.py``: trains every (method, form, momentum) case of the
registry for a few float64 steps in ONE process, one run folder per case, so the 1-process and the
2-process (``torchrun --nproc_per_node 2``, gloo) launches each pay the start-up cost once.

    python -m tests.trainer.ddp_cases OUT_DIR [CASE_ID ...]      # default: every case
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Tuple

from tests.conftest import tiny_overrides
from transfer.methods import METHODS

# Extra method parameters for cases whose state only exists with a non-default setting.
EXTRA_PARAMS: Dict[str, Dict[str, object]] = {"moco": {"queue_size": 48}}

# What every case trains: tiny net, SyncBN, float64 (see ATOL_F64 in test_resume_and_ddp.py), 3
# steps with distinct batches so rule state (F, F_hat/W_p, queue) evolves across steps.
COMMON = {"optim.max_steps": 3, "optim.batch_size": 16, "train.ckpt_every": 100, "model.sync_bn": "true",
          "optim.base_lr": 0.05, "train.dtype": "float64", "model.width": 0.0625, "model.proj_hidden": 32,
          "model.proj_dim": 16, "model.pred_hidden": 8}


def cases() -> List[Tuple[str, str, bool, Dict[str, object]]]:
    """(method, form, momentum, params): every registered method x its forms x EMA on/off, plus
    the methods in EXTRA_PARAMS once more with those parameters (MoCo with a queue)."""
    out = []
    for name in METHODS.names():
        for form in METHODS.get(name).forms:
            for mom in (True, False):
                out.append((name, form, mom, {}))
                if name in EXTRA_PARAMS:
                    out.append((name, form, mom, EXTRA_PARAMS[name]))
    return out


def case_id(case: Tuple[str, str, bool, Dict[str, object]]) -> str:
    name, form, mom, params = case
    tail = "".join(f"-{k}{v}" for k, v in sorted(params.items()))
    return f"{name}-{form}-{'ema' if mom else 'noema'}{tail}"


def overrides(out: Path, case: Tuple[str, str, bool, Dict[str, object]]) -> List[str]:
    name, form, mom, params = case
    extra = dict(COMMON, **{"method.name": name, "method.form": form, "method.momentum": str(mom).lower()})
    extra.update({f"method.params.{k}": v for k, v in params.items()})
    return tiny_overrides(out, name=case_id(case), **extra)


def main(argv: List[str]) -> int:
    from transfer.config import load_config
    from transfer.trainer import Trainer

    out, wanted = Path(argv[0]), set(argv[1:])
    tr = None
    for case in cases():
        if wanted and case_id(case) not in wanted:
            continue
        tr = Trainer(load_config(None, overrides(out, case)), device="cpu", quiet=True)
        tr.fit()
    if tr is not None:
        tr.close()  # the process group is shared by every case of this launch
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
