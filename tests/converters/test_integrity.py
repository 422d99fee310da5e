"""Issue 17 section 4, converter items: output == input refused, checkpoint.pt digest verified,
NaN/inf weights refused by name, a ``*.safetensors`` name that is not safetensors read by content."""
from __future__ import annotations

import os
import zipfile

import pytest
import torch

from converters import convert, read_checkpoint
from transfer.checkpoint import STATE_DIGEST_KEY, load_state, save_state
from transfer.cli import main
from transfer.errors import UserError

from .conftest import tv_state
from .layouts import CASES, mlp, pre, trunk


# -- 6. convert X -o X ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["torchvision", "timm", "detectron2", "mmseg"])
def test_output_that_is_the_input_is_refused(tmp_path, target):
    src = tmp_path / "w.bin"
    torch.save(tv_state(18), src)
    before = src.read_bytes()
    with pytest.raises(UserError, match="is the input checkpoint"):
        convert(src, target, src)
    assert src.read_bytes() == before


@pytest.mark.parametrize("how", ["symlink", "hardlink", "relative"])
def test_output_aliasing_the_input_is_refused(tmp_path, how, monkeypatch):
    src = tmp_path / "w.pth"
    torch.save(tv_state(18), src)
    before = src.read_bytes()
    if how == "symlink":
        out = tmp_path / "link.pth"
        out.symlink_to(src)
    elif how == "hardlink":
        out = tmp_path / "hard.pth"
        os.link(src, out)
    else:
        monkeypatch.chdir(tmp_path)
        out = src.relative_to(tmp_path)
    with pytest.raises(UserError, match="is the input checkpoint"):
        convert(src, "torchvision", out)
    assert src.read_bytes() == before


def test_cli_refuses_overwriting_the_input_and_a_run_folders_export(tmp_path, capsys):
    run = tmp_path / "run"
    CASES["transfer-export"]["transfer_export"](tv_state(18), tv_state(18)).write((run.mkdir() or run) / "backbone.safetensors")
    before = (run / "backbone.safetensors").read_bytes()
    assert main(["convert", str(run), "--to", "timm", "-o", str(run / "backbone.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "is the input checkpoint" in err and len(err.strip().splitlines()) == 1
    assert (run / "backbone.safetensors").read_bytes() == before


# -- 7. integrity: digest of checkpoint.pt, NaN/inf weights --------------------------------------

def _transfer_state(o, m) -> dict:
    sd = {**pre("online.backbone.", trunk(o)), **mlp("online.projector."), **mlp("online.predictor."),
          **pre("momentum.backbone.", trunk(m)), **mlp("momentum.projector.")}
    return {"format": "transfer.checkpoint/1", "step": 3, "model": sd, "optimizer": {"state": {}, "param_groups": []},
            "rng": {"torch": torch.get_rng_state()}, "config": "{}", "world_size": 1}


def _flip_byte_in_tensor_record(path, key_fragment: str = "data/") -> None:
    """Flip one byte inside the largest tensor record of a torch zip (stored uncompressed)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if key_fragment in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
        pos = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x01]))


def test_checkpoint_digest_detects_a_flipped_byte(tmp_path):
    ck = tmp_path / "run" / "checkpoint.pt"
    save_state(ck, _transfer_state(tv_state(18), tv_state(18, 1)))
    assert STATE_DIGEST_KEY in torch.load(ck, weights_only=True)
    sd, _, report = read_checkpoint(ck)  # intact: reads, digest not among the weights
    assert report.source == "transfer-ckpt" and STATE_DIGEST_KEY not in str(report.unconverted)
    assert STATE_DIGEST_KEY not in load_state(ck)
    _flip_byte_in_tensor_record(ck)
    with pytest.raises(UserError, match=r"checkpoint\.pt: contents do not match the sha256"):
        read_checkpoint(ck)
    with pytest.raises(UserError, match="sha256"):
        convert(tmp_path / "run", "torchvision", tmp_path / "o.pth")
    with pytest.raises(UserError, match="sha256"):
        load_state(ck)
    assert not (tmp_path / "o.pth").exists()


def test_checkpoint_without_digest_still_reads(tmp_path):
    """Checkpoints written before the digest existed stay readable (backward compatible)."""
    ck = tmp_path / "checkpoint.pt"
    torch.save(_transfer_state(tv_state(18), tv_state(18, 1)), ck)
    assert read_checkpoint(ck)[2].source == "transfer-ckpt"
    assert load_state(ck)["step"] == 3


def test_nonfinite_weights_refused_by_name_or_converted_with_warning(tmp_path, capsys):
    sd = dict(tv_state(18))
    sd["layer1.0.bn1.running_var"] = sd["layer1.0.bn1.running_var"].clone()
    sd["layer1.0.bn1.running_var"][0] = float("inf")
    sd["layer3.1.conv2.weight"] = torch.full_like(sd["layer3.1.conv2.weight"], float("nan"))
    src = tmp_path / "x.pth"
    torch.save({"state_dict": pre("module.", sd)}, src)
    out = tmp_path / "o.pkl"
    with pytest.raises(UserError) as e:
        convert(src, "detectron2", out)
    msg = str(e.value)
    assert "2 weight tensor(s) hold NaN/inf" in msg and "--allow-nonfinite" in msg
    assert "module.layer1.0.bn1.running_var (0 NaN, 1 inf" in msg and "module.layer3.1.conv2.weight (" in msg
    assert not out.exists()
    assert main(["convert", str(src), "--to", "detectron2", "-o", str(out), "-q", "--allow-nonfinite"]) == 0
    assert "WARNING: 2 weight tensor(s) hold NaN/inf" in capsys.readouterr().out and out.exists()


# -- 8. a *.safetensors name on something else ---------------------------------------------------

def test_torch_file_named_safetensors_is_read_by_content(tmp_path):
    path = tmp_path / "weights.safetensors"
    torch.save(tv_state(18), path)
    assert read_checkpoint(path)[2].source == "torchvision"


@pytest.mark.parametrize("kind", ["zip", "torch-truncated", "text"])
def test_non_safetensors_named_safetensors_is_one_line(tmp_path, capsys, kind):
    path = tmp_path / "model.safetensors"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "not weights")
    elif kind == "torch-truncated":
        torch.save(tv_state(18), path)
        path.write_bytes(path.read_bytes()[:2000])
    else:
        path.write_text("just some text, not a model\n" * 4)
    assert main(["convert", str(path), "--inspect"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(path) in err and "named .safetensors" in err
