"""autobayes.fx.convert: a module that keeps its own forward (a Linear subclass, nn.MultiheadAttention) gets
posterior attributes instead of being replaced, and behaves as before under ``use_mean``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autobayes.nn import BayesParameter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _zoo_check import check_conversion  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_linear_subclass_with_own_forward_keeps_behaviour():
    class ScaledLinear(nn.Linear):
        def forward(self, x):
            return F.linear(x, self.weight * 2.0, self.bias)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = ScaledLinear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(x))

    bnn = check_conversion(Net(), torch.randn(3, 4))
    assert isinstance(bnn.a, ScaledLinear) and isinstance(bnn.a.weight_posterior, BayesParameter)
    assert bnn.bayes_report.get("a").how == "attribute"


def test_multihead_attention_is_bayesian():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    bnn = check_conversion(Attn(), torch.randn(2, 3, 8))
    assert isinstance(bnn.mha.in_proj_weight_posterior, BayesParameter)
    assert isinstance(bnn.mha.out_proj.weight_posterior, BayesParameter)
