"""Bad input: code payloads refused (nothing runs), truncation, unknown layouts, strict, shapes."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from converters import convert, read_checkpoint
from transfer.errors import UserError

from .conftest import small_state, tv_state
from .layouts import canon


class _Payload:
    """Unpickling this would run ``os.system(cmd)``."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_pickle_with_os_system_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"stem.conv1.weight": _Payload(f"touch {marker}")}, "matching_heuristics": True}, f)
    assert b"system" in path.read_bytes()
    with pytest.raises(UserError, match=r"refused.*(posix|os)\.system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_torch_file_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": _Payload(f"touch {marker}")}, path)
    with pytest.raises(UserError, match="weights_only"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix,writer", [(".pth", "torch"), (".pkl", "pickle"), (".safetensors", "st")])
def test_truncated_file_is_a_clear_error(tmp_path, suffix, writer):
    sd = canon(tv_state(18))
    full = tmp_path / f"full{suffix}"
    if writer == "torch":
        torch.save(sd, full)
    elif writer == "pickle":
        with open(full, "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in sd.items()}}, f)
    else:
        from safetensors.torch import save_file
        save_file(sd, str(full))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated|corrupt"):
        read_checkpoint(cut)


def test_unknown_layout_lists_keys_and_formats(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"net": {"encoder.stem.w": torch.zeros(2), "encoder.body.w": torch.zeros(2)}}, path)
    with pytest.raises(UserError) as e:
        read_checkpoint(path)
    msg = str(e.value)
    assert "net.encoder.stem.w" in msg and "formats tried" in msg and "moco" in msg and "vissl" in msg


def test_strict_fails_on_leftovers_and_writes_nothing(tmp_path):
    sd = {**tv_state(18), "module.mystery.weight": torch.zeros(3)}
    path = tmp_path / "x.pth"
    torch.save(sd, path)
    out = tmp_path / "out.pkl"
    report = convert(path, "detectron2", out)  # lenient: reported, not fatal
    assert report.unconverted == ["module.mystery.weight"] and "UNCONVERTED" in report.format()
    out.unlink()
    with pytest.raises(UserError, match=r"--strict.*module\.mystery\.weight"):
        convert(path, "detectron2", out, strict=True)
    assert not out.exists()


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
    sd = dict(tv_state(18))
    sd["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    path = tmp_path / "x.pth"
    torch.save(sd, path)
    with pytest.raises(UserError, match=r"layer2\.0\.conv1\.weight.*\(128, 64, 5, 5\).*\(128, 64, 3, 3\)"):
        read_checkpoint(path)


def test_missing_block_is_an_error(tmp_path):
    sd = {k: v for k, v in tv_state(18).items() if not k.startswith("layer3.1.bn2")}
    path = tmp_path / "x.pth"
    torch.save(sd, path)
    with pytest.raises(UserError, match=r"missing \['layer3\.1\.bn2"):
        read_checkpoint(path)


def test_small_stem_refused_by_detectron2_but_kept_by_torchvision(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(small_state(), path)
    with pytest.raises(UserError, match="small-image stem"):
        convert(path, "detectron2", tmp_path / "o.pkl")
    report = convert(path, "torchvision", tmp_path / "o.pth")
    assert report.arch["small"] is True


def test_unknown_source_name(tmp_path):
    path = tmp_path / "x.pth"
    torch.save(tv_state(18), path)
    with pytest.raises(UserError, match="unknown source format"):
        read_checkpoint(path, source="nope")
