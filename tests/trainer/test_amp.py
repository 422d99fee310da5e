"""bf16 autocast on the CPU (``train.amp``): what ``auto`` resolves to, and that every method's
default form trains under it with its loss and rule state in fp32."""
from __future__ import annotations

import pytest
import torch

from transfer import devices
from transfer.checkpoint import load_backbone
from transfer.config import load_config
from transfer.methods import METHODS
from transfer.trainer import Trainer


@pytest.mark.parametrize("amx,want", [(True, "bf16-autocast"), (False, "float32")])
def test_auto_follows_the_cpu(tiny, monkeypatch, amx, want):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    tr = Trainer(load_config(None, tiny(**{"train.amp": "auto"})), device="cpu", quiet=True)
    assert tr.precision == want and tr.amp is amx


def test_auto_without_the_probe_stays_fp32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert devices.bf16_native(torch.device("cpu")) is False


def test_explicit_false_wins_and_float64_never_autocasts(tiny, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert Trainer(load_config(None, tiny(**{"train.amp": False})), device="cpu", quiet=True).precision == "float32"
    tr = Trainer(load_config(None, tiny(**{"train.amp": True, "train.dtype": "float64"})), device="cpu", quiet=True)
    assert tr.precision == "float64" and not tr.amp


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_in_bf16(tiny, method):
    cls = METHODS.get(method)
    cfg = load_config(None, tiny(name=method, **{"train.amp": True}) + [
        f"method.name={method}", f"method.form={cls.default_form}",
        f"method.momentum={str(bool(cls.default_momentum)).lower()}"])
    tr = Trainer(cfg, device="cpu", quiet=True)
    seen = []
    real = tr.method.forward

    def spy(views, step):
        seen.append({k: getattr(views, k).dtype for k in ("z1", "z2", "t1", "t2", "p1", "p2")
                     if getattr(views, k) is not None})
        loss, stats = real(views, step)
        seen[-1]["loss"] = loss.dtype
        return loss, stats

    tr.method.forward = spy
    out = tr.fit()
    assert out["step"] == 3 and out["precision"] == "bf16-autocast"
    assert torch.isfinite(torch.tensor(out["loss"]))
    assert seen and all(set(d.values()) == {torch.float32} for d in seen), seen  # the loss never sees bf16
    for p in tr.model.online.parameters():
        assert p.dtype == torch.float32  # autocast casts activations, the weights stay fp32
    _, meta = load_backbone(tr.run_dir)
    assert meta["precision"] == "bf16-autocast"


def test_float64_runs_keep_float64_views(tiny):
    """The cast to the loss's dtype is the run's dtype, not float32 (the 2-process equality test
    trains in float64)."""
    cfg = load_config(None, tiny(**{"train.dtype": "float64"}) + ["method.name=directpred"])
    tr = Trainer(cfg, device="cpu", quiet=True)
    seen = []
    real = tr.method.forward
    tr.method.forward = lambda views, step: (seen.append(views.z1.dtype), real(views, step))[1]
    tr.fit()
    assert seen and set(seen) == {torch.float64}
