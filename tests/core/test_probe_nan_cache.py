"""A backbone that yields NaN features never leaves them in the feature cache (issue 17, item 10)."""
from __future__ import annotations

import types

import torch

from probes.features import cached_features, make_transform
from transfer.data import build_dataset


class _NaN(torch.nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 4), float("nan"))


def test_nan_features_are_not_cached(tmp_path):
    ds = build_dataset("synthetic", "test", None, None)
    src = types.SimpleNamespace(identity="nan-backbone", backbone=_NaN())
    tf = make_transform(32, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    feats, _, info = cached_features(src, ds, "test", tf, cache_dir=tmp_path, device="cpu")
    assert torch.isnan(feats).all()
    assert not list(tmp_path.glob("*.safetensors"))
    # a NaN entry left by an older version is not served
    from safetensors.torch import save_file

    save_file({"features": feats, "labels": torch.zeros(len(feats), dtype=torch.long)}, info["path"],
              metadata={"key": __import__("probes.features", fromlist=["x"]).cache_key("nan-backbone",
                        __import__("probes.features", fromlist=["x"]).dataset_identity(ds, "test", None), tf)[1]})
    _, _, info2 = cached_features(src, ds, "test", tf, cache_dir=tmp_path, device="cpu")
    assert info2["cache"] == "miss"
