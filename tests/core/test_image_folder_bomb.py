"""A decompression-bomb image in an ImageFolder is one clear error naming the file (issue 17, item 8)."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from transfer.data.datasets import ImageFolderDataset
from transfer.errors import UserError


def test_decompression_bomb_is_one_error(tmp_path, monkeypatch):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        PIL.Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / c / "x.png")
    ds = ImageFolderDataset(tmp_path, load_size=32)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 is > 2x the limit: Pillow raises
    with pytest.raises(UserError, match=r"cannot decode image .*x\.png: .*decompression bomb"):
        ds[0]
