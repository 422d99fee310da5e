"""The helpers issue 16 made single: the "did you mean" suggestion and the --device resolution."""
from __future__ import annotations

import pytest
import torch

from transfer.devices import resolve_device
from transfer.errors import UserError
from transfer.suggest import did_you_mean


def test_suggestion_names_the_closest_known_name():
    assert did_you_mean("byl", ["byol", "simclr", "moco"]) == " (did you mean 'byol'?)"
    assert did_you_mean("lr", {"lr": 1, "lars": 2}) == " (did you mean 'lr'?)"  # any iterable of names


def test_suggestion_is_empty_when_nothing_is_close():
    assert did_you_mean("zzzz", ["byol", "simclr"]) == ""
    assert did_you_mean("byol", []) == ""


def test_suggestion_prefix_names_the_section():
    assert did_you_mean("btch_size", ["batch_size", "epochs"], "optim.") == " (did you mean 'optim.batch_size'?)"


def test_every_unknown_name_error_uses_it():
    from transfer.methods import METHODS
    from transfer.tasks import TASKS

    for reg, wrong in ((METHODS, "simclrr"), (TASKS, "shapes_dett")):
        with pytest.raises(UserError, match=r"did you mean"):
            reg.get(wrong)
    with pytest.raises(UserError, match=r"did you mean 'max_iter'"):
        TASKS.get("shapes_seg").resolve_settings({"max_itr": 3})


def test_device_auto_and_explicit():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want and resolve_device(None).type == want
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda: CUDA is not available"):
            resolve_device("cuda")


def test_one_normalisation_rule_for_detection_and_segmentation():
    """Both kinds read a checkpoint's mean/std the same way (0-255 scale and grey included); the
    segmentation engine used to take a 0-255 mean as is."""
    from transfer.engines.norm import resolve_mean_std
    from transfer.engines.seg_embedded import norm_stats

    m255 = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
    mean, std, where = resolve_mean_std(m255)
    assert where == "checkpoint" and abs(mean[0] - 0.485) < 1e-6 and abs(std[2] - 0.225) < 1e-6
    assert norm_stats(m255, {}) == (tuple(mean), tuple(std))
    assert resolve_mean_std({"mean": [0.286], "std": [0.353]}) == ([0.286] * 3, [0.353] * 3, "checkpoint (grey)")
    assert resolve_mean_std({})[2] == "imagenet" and norm_stats(m255, {"norm": "imagenet"}) == tuple(map(tuple, resolve_mean_std({})[:2]))
