"""``transfer convert`` through ``transfer.cli.main``."""
from __future__ import annotations

import torch

from transfer.cli import main

from .conftest import tv_state
from .layouts import CASES


def test_convert_and_inspect(tmp_path, capsys):
    src = CASES["moco"]["moco_v2"](tv_state(18), tv_state(18, seed=1)).write(tmp_path / "moco.pth.tar")
    out = tmp_path / "moco_r18.pkl"
    assert main(["convert", str(src), "--to", "detectron2", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "module.encoder_q.layer1.0.bn1.weight -> res2.0.conv1.norm.weight" in text
    assert "dropped (MoCo queue)" in text and "momentum branch" in text and "unconverted: none" in text
    assert out.exists() and (tmp_path / "moco_r18.yaml").exists()

    assert main(["convert", str(out), "--inspect"]) == 0
    assert "format:    detectron2" in capsys.readouterr().out
    assert main(["convert", str(src), "--inspect"]) == 0
    text = capsys.readouterr().out
    assert "format:    moco" in text and "momentum   prefix 'module.encoder_k.'" in text


def test_momentum_strict_and_errors(tmp_path, capsys):
    src = CASES["dino"]["dino"](tv_state(18), tv_state(18, seed=1)).write(tmp_path / "dino.pth")
    out = tmp_path / "teacher.pth"
    assert main(["convert", str(src), "--to", "torchvision", "-o", str(out), "--momentum", "--strict", "-q"]) == 0
    assert "branch: momentum" in capsys.readouterr().out
    assert torch.equal(torch.load(out, weights_only=True)["conv1.weight"], tv_state(18, seed=1)["conv1.weight"])

    assert main(["convert", str(src), "--to", "timm"]) == 2
    assert "needs --to FORMAT and -o OUT" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.pth"), "--inspect"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["convert", str(src), "--from", "moco", "--to", "timm", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "error:" in capsys.readouterr().err
