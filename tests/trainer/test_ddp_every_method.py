"""2-process gloo DDP == 1 process for EVERY registered method x form x EMA on/off (plus MoCo with
a queue), issue 13: the cases come from the registry (``ddp_cases.cases``), so a newly registered
method is covered without editing this file.

Each launch (1 process; ``torchrun --nproc_per_node 2``) trains all selected cases in one process
(``tests/trainer/ddp_cases.py``): tiny net, SyncBN, float64, global batch 16, 3 steps. Parameters,
buffers and rule state (F, F_hat/W_p, queue) must agree to ``ATOL_F64`` (its derivation is in
``test_resume_and_ddp.py``). Measured on 2 shared cores: 1.0e-14 to 4.6e-14 for every case (the
largest: MoCo's queue); about 50 s for the 1-process launch and 130 s for the 2-process one, so the
module is ``slow`` (the CI command, ``scripts/test.sh``, runs slow tests).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer.ddp_cases import case_id, cases
from tests.trainer.test_resume_and_ddp import ATOL_F64, _env
from tests.conftest import ROOT
from transfer.checkpoint import load_state

CASES = cases()
IDS = [case_id(c) for c in CASES]


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Both launches, once per module, over the cases this session selected."""
    wanted = sorted({it.callspec.params["cid"] for it in request.session.items
                     if it.module is request.module and hasattr(it, "callspec")})
    out = tmp_path_factory.mktemp("ddp_every_method")
    worker = ["-m", "tests.trainer.ddp_cases"]
    r = subprocess.run([sys.executable, *worker, str(out / "one"), *wanted], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        *worker, str(out / "two"), *wanted], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("cid", IDS)
def test_two_process_gloo_equals_one_process_every_method(runs: Path, cid: str) -> None:
    a, b = load_state(runs / "one" / cid / "checkpoint.pt"), load_state(runs / "two" / cid / "checkpoint.pt")
    assert a["world_size"] == 1 and b["world_size"] == 2 and a["step"] == b["step"] == 3
    assert a["model"].keys() == b["model"].keys() and a["method_state"].keys() == b["method_state"].keys()
    for part in ("model", "method_state"):
        for k, v in a[part].items():
            w = b[part][k]
            if not v.is_floating_point():
                assert torch.equal(v, w), f"{part}.{k} differs"
                continue
            assert v.dtype == torch.float64, f"{part}.{k} is {v.dtype}: the run did not train in float64"
            torch.testing.assert_close(v, w, rtol=0, atol=ATOL_F64, msg=lambda m, k=k: f"{part}.{k}: {m}")
