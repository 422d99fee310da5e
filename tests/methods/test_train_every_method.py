"""Every registered method, in each of its forms, with and without the momentum encoder, trains a
few steps on CPU and exports a backbone that loads back with its metadata."""
from __future__ import annotations

import itertools
import json

import pytest
import torch

from transfer.checkpoint import load_backbone, load_state
from transfer.config import load_config
from transfer.methods import METHODS
from transfer.trainer import Trainer

def _case(m: str, f: str, mom: bool):
    """Each method's default form and momentum run by default; the rest of the matrix is slow
    (the formulas of every form are covered by test_reference_ports.py in seconds)."""
    cls = METHODS.get(m)
    marks = () if (f, mom) == (cls.default_form, cls.default_momentum) else (pytest.mark.slow,)
    return pytest.param(m, f, mom, marks=marks, id=f"{m}-{f}-{'ema' if mom else 'noema'}")


CASES = [_case(m, f, mom) for m in METHODS.names() for f, mom in itertools.product(METHODS.get(m).forms, (True, False))]


@pytest.mark.parametrize("method,form,momentum", CASES)
def test_trains_and_exports(tiny, method, form, momentum):
    cfg = load_config(None, tiny(name=f"{method}_{form}_{momentum}") + [
        f"method.name={method}", f"method.form={form}", f"method.momentum={str(momentum).lower()}",
    ])
    tr = Trainer(cfg, device="cpu", quiet=True)
    before = {k: v.clone() for k, v in tr.model.online.backbone.state_dict().items()}
    out = tr.fit()
    assert out["step"] == 3
    assert (tr.model.momentum is not None) == momentum
    changed = any(not torch.equal(before[k], v) for k, v in tr.model.online.backbone.state_dict().items()
                  if v.is_floating_point())
    assert changed, "no parameter moved"
    bb, meta = load_backbone(tr.run_dir)
    assert meta["method"] == method and meta["form"] == form and meta["momentum"] == momentum
    assert meta["images_seen"] == 3 * 32 and meta["input_size"] == 32
    for k, v in bb.state_dict().items():
        assert torch.equal(v, tr.model.online.backbone.state_dict()[k]), k
    st = load_state(tr.ckpt_path)
    assert st["step"] == 3
    log = [json.loads(x) for x in (tr.run_dir / "log.jsonl").read_text().splitlines()]
    assert {"loss", "pos_sim", "lr", "momentum"} <= set(log[-1])
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log if "loss" in r)
