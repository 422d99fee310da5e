"""DirectPred's trained-predictor baselines (Tian et al. 2021, Sec. 6): ``predictor: linear | mlp``
trains a predictor under the same loss instead of setting ``W_p`` from statistics."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from transfer.errors import UserError
from transfer.methods import Views, build_method
from transfer.methods.asymmetric import directpred_loss


@pytest.mark.parametrize("kind,layers", [("linear", 1), ("mlp", 2)])
def test_trained_predictor_is_built_and_used(kind, layers):
    m = build_method("directpred", 8, form="loss", predictor=kind)
    pred = m.build_predictor(8, 16)
    assert sum(isinstance(x, nn.Linear) for x in pred.modules()) == layers
    g = torch.Generator().manual_seed(0)
    z1, z2, t1, t2 = (torch.randn(6, 8, generator=g) for _ in range(4))
    p1, p2 = pred(z1), pred(z2)
    loss, _ = m(Views(z1, z2, t1, t2, p1, p2), 0)
    assert torch.allclose(loss, directpred_loss(p1, p2, t1, t2))
    assert bool(m.F_hat_initialised) is False  # the statistics of the analytic predictor are not used


def test_analytic_predictor_is_the_default_and_grad_form_has_none():
    assert build_method("directpred", 8, form="loss").build_predictor(8, 16) is None
    assert build_method("directpred", 8, form="grad", predictor="mlp").build_predictor(8, 16) is None
    with pytest.raises(UserError, match="predictor"):
        build_method("directpred", 8, form="loss", predictor="deep")
