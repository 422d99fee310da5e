"""Backbone registry API, torchvision key compatibility, export metadata and integrity."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from transfer.backbones import BACKBONES, build_backbone
from transfer.checkpoint import export_backbone, load_backbone, read_export
from transfer.errors import UserError
from transfer.optim import LARS, lr_schedule, momentum_schedule


@pytest.mark.parametrize("name", BACKBONES.names())
def test_backbone_api(name):
    width = 1.0 if name.startswith("resnet") else 0.25
    bb = build_backbone(name, width=width).eval()
    size = 64 if name.startswith("resnet") else 32
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        st = bb.forward_stages(x)
        f = bb(x)
    assert f.shape == (2, bb.feature_dim)
    assert [st[k].shape[1] for k in ("res2", "res3", "res4", "res5")] == bb.stage_channels
    # strides: 4/8/16/32 for the ImageNet stem, 1/2/4/8 for the small-image stem
    first = size // (4 if name.startswith("resnet") else 1)
    assert st["res2"].shape[-1] == first and st["res5"].shape[-1] == max(1, first // 8)


@pytest.mark.parametrize("depth", [18, 50])
def test_keys_load_into_torchvision(depth):
    bb = build_backbone(f"resnet{depth}")
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    missing, unexpected = tv.load_state_dict(bb.state_dict(), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    tv.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(tv.eval()(x), bb.eval()(x))


def test_export_round_trip_and_tamper(tmp_path):
    bb = build_backbone("small_resnet18", width=0.25)
    p = tmp_path / "backbone.safetensors"
    export_backbone(p, bb, {"method": "unigrad", "config": {"a": 1}, "input_size": 32})
    bb2, meta = load_backbone(p)
    assert meta["method"] == "unigrad" and meta["config"] == {"a": 1} and meta["arch"]["small"] is True
    for k, v in bb.state_dict().items():
        assert torch.equal(v, bb2.state_dict()[k])
    sd, _ = read_export(p)
    # flip one weight in the file: the sha256 check refuses it
    from safetensors.torch import save_file
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        header = f.metadata()
    sd["conv1.weight"][0, 0, 0, 0] += 1
    save_file(sd, str(p), metadata=header)
    with pytest.raises(UserError, match="sha256"):
        read_export(p)
    p.write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a valid safetensors"):
        read_export(p)


def test_schedules():
    lr = lr_schedule(1.0, 100, 10, 1e-3)
    assert lr[0] == pytest.approx(1e-3) and lr[10] == pytest.approx(1.0) and lr[-1] < 2e-3
    assert np.all(np.diff(lr[:10]) > 0) and np.all(np.diff(lr[10:]) <= 0)
    mm = momentum_schedule(0.996, 1.0, 100)
    assert mm[0] == pytest.approx(0.996) and mm[-1] == pytest.approx(1.0, abs=1e-5) and np.all(np.diff(mm) >= 0)


def test_lars_scales_update_by_trust_ratio():
    w = torch.nn.Parameter(torch.ones(4) * 2)
    opt = LARS([{"params": [w], "weight_decay": 0.0, "lars_exclude": False}], lr=1.0, momentum=0.0, eta=0.1)
    w.grad = torch.ones(4) * 100
    opt.step()
    # update = lr * eta * ||w|| / ||g|| * g = 0.1 * 4 / 200 * 100 = 0.2
    assert torch.allclose(w.detach(), torch.full((4,), 1.8))
