"""Input checks shared by every probe: bad features or labels become a clear error or a stated
warning that the report carries, never a silently wrong number."""
from __future__ import annotations

from typing import List, Sequence, Union

import numpy as np
import torch

from transfer.errors import UserError

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence]


def as_tensor(x: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
    """A torch tensor (no copy where possible) from a tensor, a numpy array or a list."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(dtype)
    return torch.as_tensor(np.asarray(x)).to(dtype)


def check_features(feats: torch.Tensor, what: str) -> List[str]:
    """Raise on empty / non-2-D / NaN / inf features; return warnings for degenerate ones.

    ``what`` names the split in messages (e.g. ``"train features"``).
    """
    if feats.dim() != 2:
        raise UserError(f"{what}: expected a 2-D (N, D) array, got shape {tuple(feats.shape)}")
    if feats.shape[0] == 0:
        raise UserError(f"{what}: empty split (0 rows)")
    if feats.shape[1] == 0:
        raise UserError(f"{what}: 0 feature dimensions")
    # a finite sum means every entry is finite (NaN/inf propagate); only an overflowing sum or a
    # real NaN/inf pays for the element-wise test
    if not bool(torch.isfinite(feats.sum())):
        bad = ~torch.isfinite(feats)
        if bool(bad.any()):
            rows = int(bad.any(1).sum())
            raise UserError(f"{what}: {rows} of {feats.shape[0]} rows contain NaN or inf "
                            f"(diverged backbone or corrupt checkpoint?)")
    warnings: List[str] = []
    if feats.shape[0] > 1 and float((feats.amax(0) - feats.amin(0)).max()) == 0.0:
        warnings.append(f"{what}: features are constant across all {feats.shape[0]} images "
                        f"(collapsed backbone); every accuracy is chance-level or a tie-break artefact")
    zero = int((feats.abs().sum(1) == 0).sum())
    if zero:
        warnings.append(f"{what}: {zero} of {feats.shape[0]} rows are all-zero (no direction after L2 normalisation)")
    return warnings


def check_labels(train_labels: torch.Tensor, test_labels: torch.Tensor, num_classes: int) -> List[str]:
    """Raise on labels outside ``[0, num_classes)`` or length 0; warn on test classes absent from train."""
    for what, y in (("train labels", train_labels), ("test labels", test_labels)):
        if y.dim() != 1:
            raise UserError(f"{what}: expected a 1-D array, got shape {tuple(y.shape)}")
        if y.numel() == 0:
            raise UserError(f"{what}: empty split (0 labels)")
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise UserError(f"{what}: values must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")
    missing = sorted(set(test_labels.unique().tolist()) - set(train_labels.unique().tolist()))
    if missing:
        n = int(torch.isin(test_labels, torch.tensor(missing)).sum())
        return [f"test classes {missing} are absent from train: their {n} test images can never be "
                f"predicted correctly (counted as errors)"]
    return []


def check_pair(train_feats: torch.Tensor, test_feats: torch.Tensor,
               train_labels: torch.Tensor, test_labels: torch.Tensor, num_classes: int) -> List[str]:
    """All checks for a (train, test) pair of features and labels; returns the warnings."""
    w = check_features(train_feats, "train features") + check_features(test_feats, "test features")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise UserError(f"train features have {train_feats.shape[1]} dims but test features {test_feats.shape[1]}")
    for what, f, y in (("train", train_feats, train_labels), ("test", test_feats, test_labels)):
        if f.shape[0] != y.shape[0]:
            raise UserError(f"{what}: {f.shape[0]} feature rows but {y.shape[0]} labels")
    return w + check_labels(train_labels, test_labels, num_classes)


def infer_num_classes(*labels: torch.Tensor) -> int:
    return int(max(int(y.max()) for y in labels if y.numel())) + 1
