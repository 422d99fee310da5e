"""Shared fixtures: tiny configs that train in seconds on CPU."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def tiny_overrides(tmp: Path, name: str = "t", **extra) -> List[str]:
    """A recipe small enough for tests: width-1/8 small ResNet-18, synthetic data, 3 steps."""
    o = {
        "out_dir": str(tmp), "name": name, "data.name": "synthetic", "data.size": 32, "data.workers": 0, "model.arch": "small_resnet18",
        "model.width": 0.125, "model.proj_hidden": 64, "model.proj_dim": 32, "model.pred_hidden": 16,
        "optim.batch_size": 32, "optim.epochs": 1, "optim.max_steps": 3, "optim.warmup_epochs": 0.1,
        "train.ckpt_every": 2, "train.knn_every": 0, "train.progress": False, "train.log_every": 1,
        "train.amp": False,  # fp32 on every machine (auto is bf16 on AMX CPUs); test_amp.py trains in bf16
    }
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


def cli_error(capsys, argv: List[str]) -> str:
    """Run ``transfer ARGV``; assert it failed as a user error does (exit 2, one line on stderr, no
    traceback) and return that line."""
    from transfer.cli import main

    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def tiny(tmp_path):
    return lambda **kw: tiny_overrides(tmp_path, **kw)


@pytest.fixture(autouse=True)
def _threads():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("TRANSFER_TEST_THREADS", "2")))
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    """Tiny float64 tensors: one thread is several times faster than two (no OpenMP spinning).
    Test modules of such tensors opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
