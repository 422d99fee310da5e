"""Operating-system failures are one line naming the path (issue 17, section 4 item 8): a read-only
output folder, a full disk, ``--device cuda`` on a machine without a GPU."""
from __future__ import annotations

import errno
import os

import pytest
import torch

from tests.conftest import cli_error


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(capsys, tiny, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        err = cli_error(capsys, ["pretrain", "unigrad_fmnist", *tiny(name="r", out_dir=ro)])
    finally:
        ro.chmod(0o755)
    assert "Permission denied" in err and str(ro) in err


def test_permission_error_is_one_line(capsys, tiny, tmp_path, monkeypatch):
    """As root cannot be refused by mode bits, the refusal is injected where the run folder is made."""
    from pathlib import Path

    real = Path.mkdir

    def refuse(self, *a, **k):
        if self.name == "r":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", refuse)
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", *tiny(name="r")])
    assert err.startswith("transfer pretrain: error: Permission denied") and str(tmp_path / "r") in err


def test_full_disk_is_one_line(capsys, tiny, tmp_path, monkeypatch):
    import transfer.checkpoint as ck

    def full(path, state):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(ck, "save_state", full)
    monkeypatch.setattr("transfer.trainer.save_state", full)
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", *tiny(name="f")])
    assert "No space left on device" in err and "checkpoint.pt" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_gpu(capsys, tiny):
    err = cli_error(capsys, ["pretrain", "unigrad_fmnist", *tiny(name="c"), "--device", "cuda"])
    assert "--device cuda" in err and "CUDA is not available" in err
