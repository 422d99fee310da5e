"""Converted weights give the same features inside detectron2 and mmsegmentation themselves.

Runs wherever the library imports (CI installs the detectron2-cdo and mmcv-lite routes, whose
missing compiled ops are stood in for in test code only: tests/tasks/det_helpers.py,
tests/tasks/seg_mmcv_stub.py); skips with the stated reason otherwise. Random, non-zero BN
statistics and residual branches make a wrong rename or a swapped norm visible.
"""
from __future__ import annotations

import pytest
import torch

from converters import convert
from transfer.backbones import build_backbone
from transfer.checkpoint import export_backbone


def _random_backbone(depth: int):
    torch.manual_seed(depth)
    bb = build_backbone(f"resnet{depth}", zero_init_residual=False)
    with torch.no_grad():
        for m in bb.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return bb.eval()


def _converted(tmp_path, depth: int, target: str, out_name: str):
    """A random backbone and its conversion to ``target`` (through our export, as a user would)."""
    bb = _random_backbone(depth)
    src = tmp_path / "backbone.safetensors"
    export_backbone(src, bb, {"method": "test"})
    out = tmp_path / out_name
    convert(src, target, out)
    return bb, out


@pytest.mark.parametrize("depth", [18, 50])
def test_detectron2_backbone_features_equal(tmp_path, depth):
    from tests.tasks.det_helpers import d2_importable, install_d2_shims

    install_d2_shims()
    ok, why = d2_importable()
    if not ok:
        pytest.skip(f"detectron2 not importable: {why}")
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    bb, out = _converted(tmp_path, depth, "detectron2", "d2.pkl")
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    d2 = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    DetectionCheckpointer(d2).load(str(out))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = bb.forward_stages(x)
        theirs = d2(x)
    for k in ("res2", "res3", "res4", "res5"):
        torch.testing.assert_close(theirs[k], ours[k], rtol=1e-4, atol=1e-4, msg=f"{k} differs in detectron2")


@pytest.mark.parametrize("depth", [18, 50])
def test_mmseg_backbone_features_equal(tmp_path, depth):
    from tests.tasks import seg_mmcv_stub

    seg_mmcv_stub.install()
    try:
        from mmseg.models.backbones import ResNet
    except Exception as e:  # noqa: BLE001 - any import failure means: not importable here
        pytest.skip(f"mmsegmentation not importable: {type(e).__name__}: {str(e)[:120]}")
    bb, out = _converted(tmp_path, depth, "mmseg", "mmseg.pth")
    sd = torch.load(out, weights_only=True)
    sd = sd.get("state_dict", sd)
    sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    m = ResNet(depth=depth, style="pytorch", out_indices=(0, 1, 2, 3))
    m.eval()  # (mmseg's ResNet.train() returns None, so no chaining)
    want = set(m.state_dict())
    unexpected = sorted(set(sd) - want)
    missing = sorted(k for k in want - set(sd) if not k.endswith("num_batches_tracked"))
    assert not unexpected and not missing, (missing[:5], unexpected[:5])
    m.load_state_dict(sd, strict=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = bb.forward_stages(x)
        theirs = m(x)
    for k, t in zip(("res2", "res3", "res4", "res5"), theirs):
        torch.testing.assert_close(t, ours[k], rtol=1e-4, atol=1e-4, msg=f"{k} differs in mmseg")
