"""Every foreign format, on a synthetic checkpoint laid out as its codebase saves it."""
from __future__ import annotations

import pytest
import torch

from converters import LAYOUTS, read_checkpoint
from converters.readers import describe

from .conftest import small_state, tv_state
from .layouts import CASES

PARAMS = [(fmt, case) for fmt, cases in CASES.items() for case in cases]


def test_every_reader_has_a_case():
    assert sorted(CASES) == sorted(layout.name for layout in LAYOUTS)


def _build(fmt: str, case: str):
    o, m = (small_state(0), small_state(1)) if fmt == "solo-learn" else (tv_state(18), tv_state(18, seed=1))
    return CASES[fmt][case](o, m)


def _same(a, b) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("fmt,case", PARAMS)
def test_reader_detects_and_recovers(tmp_path, fmt, case):
    c = _build(fmt, case)
    path = c.write(tmp_path / f"{case}.ckpt")
    sd, meta, report = read_checkpoint(path)
    assert report.source == fmt and meta["source_format"] == fmt
    _same(sd, c.momentum if c.default == "momentum" else c.online)  # the branch the method evaluates
    assert meta["branch"] == c.default and f"branch: {'momentum/teacher' if c.default == 'momentum' else 'online'} by default" in report.format()
    assert report.unconverted == [], report.unconverted
    assert meta["arch"]["small"] is (fmt == "solo-learn") and meta["arch"]["depth"] == 18
    assert meta["arch"].get("stem_padding") == (2 if fmt == "solo-learn" else None)
    reasons = " | ".join(r for _, r in report.dropped)
    for h in c.heads:
        assert h in reasons, (h, reasons)
    if c.momentum is not None:
        assert ("online branch" if c.default == "momentum" else "momentum branch") in reasons
        msd, mmeta, mreport = read_checkpoint(path, momentum=True)
        assert mmeta["branch"] == "momentum" and mreport.unconverted == []
        _same(msd, c.momentum)
        osd, ometa, oreport = read_checkpoint(path, momentum=False)
        assert ometa["branch"] == "online" and oreport.unconverted == []
        _same(osd, c.online)
        assert not torch.equal(msd["conv1.weight"], osd["conv1.weight"])
    else:
        with pytest.raises(Exception, match="momentum"):
            read_checkpoint(path, momentum=True)
    text = describe(path)
    assert f"format:    {fmt} " in text


@pytest.mark.parametrize("fmt,case", [("moco", "moco_v2"), ("lightly", "lightly_sequential")])
def test_forced_source(tmp_path, fmt, case):
    path = _build(fmt, case).write(tmp_path / "x.pth")
    sd, meta, report = read_checkpoint(path, source=fmt)
    assert report.source == fmt


def test_transfer_export_keeps_metadata(tmp_path):
    c = _build("transfer-export", "transfer_export")
    path = c.write(tmp_path / "backbone.safetensors")
    sd, meta, _ = read_checkpoint(path)
    assert meta["method"] == "byol" and meta["form"] == "gradient" and meta["arch"]["depth"] == 18


def test_load_any_backbone_from_foreign(tmp_path):
    from converters import load_any_backbone

    c = _build("solo-learn", "solo_learn")
    path = c.write(tmp_path / "solo.ckpt")
    bb, meta = load_any_backbone(path, momentum=True)
    assert bb.spec.small and bb.spec.stem_padding == 2 and torch.equal(bb.state_dict()["layer4.1.conv2.weight"], c.momentum["layer4.1.conv2.weight"])
