"""Bad input gives one clear line naming the fault (exit 2), never a traceback wall."""
from __future__ import annotations

import pytest

from tests.conftest import cli_error
from transfer.cli import main


def test_missing_dataset_path(capsys, tiny, tmp_path):
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", f"data.name={tmp_path}/nope", *tiny()[:1]])
    assert "nope" in err


def test_missing_fashion_mnist_root(capsys, tmp_path):
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", f"data.root={tmp_path}/fm", f"out_dir={tmp_path}"])
    assert f"{tmp_path}/fm" in err and "dataset-fashion-mnist" in err


def test_unknown_method(capsys):
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", "method.name=simclrr"])
    assert "simclrr" in err and "did you mean 'simclr'" in err


def test_misspelled_key(capsys):
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", "optim.base_rl=0.1"])
    assert "optim.base_rl" in err and "optim.base_lr" in err


def test_unknown_method_param(capsys, tiny):
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", *tiny(), "method.params={lambda: 3}"])
    assert "'lambda'" in err and "lambd" in err


def test_unknown_recipe(capsys):
    err = cli_error(capsys, ["pretrain", "unigard_fmnist"])
    assert "unigard_fmnist" in err and "unigrad_fmnist" in err


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_on_resume(capsys, tiny, tmp_path, damage):
    assert main(["pretrain", "unigrad_fmnist", *tiny(name="r")]) == 0
    capsys.readouterr()
    ck = tmp_path / "r" / "checkpoint.pt"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint at all")
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", *tiny(name="r"), "optim.max_steps=5"])
    assert str(ck) in err and "corrupt or truncated" in err


def test_resume_with_other_method_refused(capsys, tiny, tmp_path):
    assert main(["pretrain", "unigrad_fmnist", *tiny(name="r")]) == 0
    capsys.readouterr()
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", *tiny(name="r"), "method.momentum=false", "optim.max_steps=5"])
    assert "checkpoint.pt" in err and "method" in err


def test_nan_guard_keeps_last_good_checkpoint(capsys, tiny, tmp_path):
    """A diverging run stops with one line and leaves the last good checkpoint loadable."""
    from transfer.checkpoint import load_state

    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", *tiny(name="nan"), "optim.base_lr=1e30",
                        "optim.max_steps=8", "train.ckpt_every=1", "optim.warmup_epochs=0"])
    assert "non-finite loss" in err and "last good checkpoint" in err
    st = load_state(tmp_path / "nan" / "checkpoint.pt")
    import torch

    assert all(torch.isfinite(v).all() for v in st["model"].values() if v.is_floating_point())
