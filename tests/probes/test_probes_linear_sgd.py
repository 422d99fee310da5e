"""The standard (augmented, frozen-backbone) linear protocol, on a tiny run."""
import pytest
import torch

from probes.linear_sgd import LARS, linear_eval_frozen
from transfer.sources import random_backbone
from transfer.data import build_dataset


@pytest.mark.parametrize("recipe", ["moco", "simsiam"])
def test_tiny_run_keeps_backbone_frozen(recipe):
    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    bb = random_backbone("small_resnet18", 0.125)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    r = linear_eval_frozen(bb, train, test, 8, train.mean, train.std, recipe=recipe, epochs=1,
                           batch_size=64, max_steps=4)
    assert r["steps"] == 4 and r["recipe"] == recipe
    assert 0 <= r["top1"] <= r["top5"] <= 100 and r["n_test"] == 360
    assert r["train_loss"] == r["train_loss"]  # finite
    for k, v in bb.state_dict().items():
        assert torch.equal(v, before[k]), k  # frozen weights and BN statistics


def test_lars_scales_matrix_steps_only():
    from transfer.optim import param_groups

    fc = torch.nn.Linear(2, 2)
    w, b = fc.weight, fc.bias
    with torch.no_grad():
        w.fill_(1.0)
        b.fill_(1.0)
    opt = LARS(param_groups(fc, 0.0), lr=1.0, momentum=0.0, eta=0.001)  # the probe's construction
    w.grad, b.grad = torch.full((2, 2), 10.0), torch.full((2,), 10.0)
    opt.step()
    torch.testing.assert_close(w.data, torch.full((2, 2), 1 - 0.001 * 10 * (2 / 20)))
    torch.testing.assert_close(b.data, torch.full((2,), -9.0))
