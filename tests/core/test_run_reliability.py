"""Run-folder reliability (issue 17, section 4 items 1, 2, 3, 10): the export always matches the
finished checkpoint, the kept checkpoint is finite, resume exemptions apply, no leftovers."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from tests.conftest import cli_error
from transfer.cli import main
from transfer.trainer import Trainer


def _export_steps(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["steps"])


def test_rerun_redoes_an_export_older_than_the_checkpoint(capsys, tiny, tmp_path):
    """A kill between the final checkpoint and its export: the rerun must not keep the old export."""
    assert main(["pretrain", "unigrad_fmnist", *tiny(name="r", **{"optim.max_steps": 5})]) == 0
    other = tmp_path / "older"
    assert main(["pretrain", "unigrad_fmnist", *tiny(name="r", out_dir=other)]) == 0  # a 3-step export
    capsys.readouterr()
    exp = tmp_path / "r" / "backbone.safetensors"
    shutil.copyfile(other / "r" / "backbone.safetensors", exp)
    assert _export_steps(exp) == 3
    assert main(["pretrain", "unigrad_fmnist", *tiny(name="r", **{"optim.max_steps": 5})]) == 0
    assert _export_steps(exp) == 5
    from transfer.checkpoint import load_state, read_export

    sd, _ = read_export(exp)
    ck = load_state(tmp_path / "r" / "checkpoint.pt")["model"]
    for k, v in sd.items():
        assert torch.equal(v, ck[f"online.backbone.{k}"]), k


def test_kill_before_the_final_export_then_rerun(capsys, tiny, tmp_path, monkeypatch):
    real = Trainer.export

    def killed(self):
        if self.step == self.stop_step:
            raise KeyboardInterrupt  # stands in for SIGKILL after save(), before the export
        return real(self)

    monkeypatch.setattr(Trainer, "export", killed)
    assert main(["pretrain", "unigrad_fmnist", *tiny(name="k")]) == 130
    monkeypatch.setattr(Trainer, "export", real)
    assert not (tmp_path / "k" / "backbone.safetensors").exists()
    assert main(["pretrain", "unigrad_fmnist", *tiny(name="k")]) == 0
    assert _export_steps(tmp_path / "k" / "backbone.safetensors") == 3


def test_checkpoint_with_inf_state_is_not_saved(capsys, tiny, tmp_path, monkeypatch):
    """A finite loss with an overflowed BatchNorm running_var: stop, keep the last good checkpoint."""
    from transfer.checkpoint import load_state

    real = Trainer.train_step

    def poisoned(self, x1, x2):
        out = real(self, x1, x2)
        if self.step == 3:
            bn = next(m for m in self.model.online.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))
        return out

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", *tiny(name="inf", **{"optim.max_steps": 4, "train.ckpt_every": 1})])
    assert "non-finite" in err and "running_var" in err and "last good checkpoint" in err
    st = load_state(tmp_path / "inf" / "checkpoint.pt")
    assert st["step"] == 2
    assert all(torch.isfinite(v).all() for v in st["model"].values() if v.is_floating_point())


def test_resume_may_change_max_steps_workers_root_and_train(capsys, tiny, tmp_path):
    assert main(["pretrain", "unigrad_fmnist", *tiny(name="x")]) == 0
    capsys.readouterr()
    rc = main(["pretrain", "unigrad_fmnist", *tiny(name="x", **{"optim.max_steps": 5, "data.root": str(tmp_path / "moved"),
                                                                 "train.log_every": 2})])
    assert rc == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["step"] == 5


def test_resume_still_refuses_a_changed_setting(capsys, tiny, tmp_path):
    assert main(["pretrain", "unigrad_fmnist", *tiny(name="y")]) == 0
    capsys.readouterr()
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", *tiny(name="y", **{"optim.base_lr": 0.123, "optim.max_steps": 5})])
    assert "optim.base_lr=" in err and "optim.optim" not in err


def test_stale_temp_files_removed_at_start_and_resume(capsys, tiny, tmp_path):
    run = tmp_path / "s"
    run.mkdir()
    junk = [run / ".checkpoint.pt.k1l2m3.tmp", run / ".backbone.safetensors.abc.tmp"]
    for j in junk:
        j.write_bytes(b"x" * 1000)
    keep = run / "notes.tmp"
    keep.write_text("mine")
    assert main(["pretrain", "unigrad_fmnist", *tiny(name="s")]) == 0
    assert not any(j.exists() for j in junk) and keep.exists()
    junk[0].write_bytes(b"x")
    assert main(["pretrain", "unigrad_fmnist", *tiny(name="s")]) == 0  # resume of a finished run
    assert not junk[0].exists()


def test_export_has_the_checkpoint_file_mode(tiny, tmp_path):
    assert main(["pretrain", "unigrad_fmnist", *tiny(name="m")]) == 0
    umask = os.umask(0)
    os.umask(umask)
    ck = os.stat(tmp_path / "m" / "checkpoint.pt").st_mode & 0o777
    ex = os.stat(tmp_path / "m" / "backbone.safetensors").st_mode & 0o777
    assert ck == ex == 0o666 & ~umask


@pytest.mark.parametrize("content", [b"", b"\0" * 10])
def test_empty_checkpoint_on_resume_is_one_line(capsys, tiny, tmp_path, content):
    run = tmp_path / "e"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(content)
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", *tiny(name="e")])
    assert str(run / "checkpoint.pt") in err
