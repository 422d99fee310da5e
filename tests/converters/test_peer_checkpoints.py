"""Peer checkpoints as their owners save them (issue 17, section 2), beyond detection and recovery
(which test_readers.py checks for every layout in layouts.CASES)."""
from __future__ import annotations

import os
import pickle
import sys

import pytest
import torch

from converters import convert, load_any_backbone, read_checkpoint
from converters.loading import HistoryBufferData, load_file
from transfer.cli import main
from transfer.errors import UserError

from .conftest import small_state, tv_state
from .layouts import CASES, canon, mmengine_save, solo_cifar_resnet18, trunk


def test_solo_learn_cifar_stem_rebuilt_with_padding_2(tmp_path):
    """solo-learn trains Conv2d(3, 64, 3, 1, padding=2): the rebuilt backbone must compute what the
    source network computes (a padding-1 stem gives 32x32 instead of 34x34 res2 maps)."""
    o, m = small_state(0), small_state(1)
    path = CASES["solo-learn"]["solo_learn"](o, m).write(tmp_path / "solo.ckpt")
    bb, meta = load_any_backbone(path)
    assert meta["arch"]["stem_padding"] == 2 and bb.conv1.padding == (2, 2)
    src = solo_cifar_resnet18(trunk(o)).eval()
    bb.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert bb.forward_stages(x)["res2"].shape[-2:] == (34, 34)
        torch.testing.assert_close(bb(x), src(x), rtol=0, atol=1e-5)
    assert any("padding=2" in n for n in meta["report"].notes)


def test_standard_arch_dict_unchanged_by_stem_padding():
    """Exports of our own backbones keep the arch dict they always had (no stem_padding key)."""
    from transfer.backbones import backbone_from_arch, build_backbone

    assert build_backbone("small_resnet18").arch_dict() == {"depth": 18, "small": True, "width": 1.0, "zero_init_residual": True}
    with pytest.raises(UserError, match="stem_padding"):
        backbone_from_arch({"depth": 18, "small": True, "stem_padding": 9})


def test_dino_defaults_to_teacher_and_says_so(tmp_path, capsys):
    src = CASES["dino"]["dino"](tv_state(18), tv_state(18, seed=1)).write(tmp_path / "dino.pth")
    out = tmp_path / "dino_r18.pth"
    assert main(["convert", str(src), "--to", "torchvision", "-o", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "branch: momentum/teacher by default" in text and "eval_knn.py" in text and "--online" in text
    assert torch.equal(torch.load(out, weights_only=True)["conv1.weight"], tv_state(18, seed=1)["conv1.weight"])
    assert main(["convert", str(src), "--to", "torchvision", "-o", str(out), "-q", "--online"]) == 0
    assert "branch: online (chosen explicitly)" in capsys.readouterr().out
    assert torch.equal(torch.load(out, weights_only=True)["conv1.weight"], tv_state(18)["conv1.weight"])
    assert main(["convert", str(src), "--inspect"]) == 0
    assert "default:   branch: momentum/teacher by default" in capsys.readouterr().out


def test_byol_pytorch_whole_learner_converts_strictly(tmp_path):
    """BYOL.net and BYOL.online_encoder.net are one module: the net.* copy is an alias, not a leftover."""
    path = CASES["byol"]["byol_pytorch_learner"](tv_state(18), tv_state(18, seed=1)).write(tmp_path / "learner.pt")
    report = convert(path, "torchvision", tmp_path / "byol.pth", strict=True)
    aliases = [k for k, r in report.dropped if r.startswith("alias of online_encoder.net")]
    assert len(aliases) == len(tv_state(18)) and report.unconverted == []


@pytest.mark.parametrize("case", ["timm_hub_folder", "timm_hub_bin"])
def test_timm_hub_files_are_timm_not_torchvision(tmp_path, capsys, case):
    path = CASES["timm"][case](tv_state(18), tv_state(18)).write(tmp_path / "snapshot")
    _, meta, report = read_checkpoint(path)
    assert report.source == "timm" and meta["hub_config"]["architecture"] == "resnet18"
    assert main(["convert", str(path), "--inspect"]) == 0
    assert "format:    timm " in capsys.readouterr().out


def test_plain_state_dict_without_hub_config_stays_torchvision(tmp_path):
    path = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tv_state(18).items()}, str(path))
    assert read_checkpoint(path)[2].source == "torchvision"


def test_mmengine_epoch_checkpoint_reads_message_hub_as_data(tmp_path):
    path = CASES["mmselfsup"]["mmengine_epoch_pth"](tv_state(18), tv_state(18, 1)).write(tmp_path / "epoch_200.pth")
    mods = {n: sys.modules.pop(n) for n in list(sys.modules) if n == "mmengine" or n.startswith("mmengine.")}
    try:  # loading must not need (or import) mmengine
        top, _, _ = load_file(path)
        assert not any(n == "mmengine" or n.startswith("mmengine.") for n in sys.modules)
    finally:
        sys.modules.update(mods)
    hb = top["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(hb, HistoryBufferData) and hb._log_history.tolist() == [0.91, 0.87]
    assert vars(hb).get("statistics_methods", {}).get("min", "HistoryBuffer.min") == "HistoryBuffer.min"
    assert float(top["message_hub"]["runtime_info"]["val/accuracy/top1"]) == 41.5


class _Payload:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _GetattrPayload:
    """Pickles as getattr(numpy.ndarray, 'tofile'): the getattr stand-in answers HistoryBuffer only."""

    def __reduce__(self):
        import numpy as np

        return (getattr, (np.ndarray, "tofile"))


@pytest.mark.parametrize("payload", ["system", "getattr"])
def test_mmengine_allow_list_admits_no_code(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = _Payload(f"touch {marker}") if payload == "system" else _GetattrPayload()

    def build(hb):
        hub = {"log_scalars": {"loss": hb([1.0], [1])}, "runtime_info": {"x": evil}, "resumed_keys": {}}
        return {"meta": {"epoch": 1}, "state_dict": {f"backbone.{k}": v for k, v in tv_state(18).items()},
                "message_hub": hub}
    path = tmp_path / "epoch_1.pth"
    mmengine_save(build)(path)
    with pytest.raises(UserError, match="refused|getattr|posix|system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_lightly_tutorial_save_converts(tmp_path):
    path = CASES["lightly-tutorial"]["lightly_tutorial_clothing"](tv_state(18), tv_state(18)).write(tmp_path / "model.pth")
    report = convert(path, "detectron2", tmp_path / "r18.pkl", strict=True)
    assert report.source == "lightly-tutorial" and report.converted == len(canon(tv_state(18)))
    with open(tmp_path / "r18.pkl", "rb") as f:
        assert "stem.conv1.weight" in pickle.load(f)["model"]  # our own file
