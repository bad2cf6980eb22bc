"""autobayes.fx.runtime.kl_units: the one answer to "which modules carry a KL", for both routes."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autobayes
from autobayes.fx.runtime import kl_units, total_kl
from autobayes.nn import BayesLayer, BayesParameter

pytestmark = pytest.mark.usefixtures("one_thread")


class Mixed(nn.Module):
    """A swapped layer used twice under two names, a posterior attribute (attention), a functional weight."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.again = self.fc
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.proj = nn.Parameter(torch.randn(4, 3))
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        h = self.again(self.fc(x))
        h = self.attn(h, h, h, need_weights=False)[0]
        return F.linear(h, self.proj.t())


@pytest.mark.parametrize("mode", ["fx", "swap"])
def test_kl_units_lists_each_kl_carrier_once(mode):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bnn = autobayes.bayesify(Mixed(), mode=mode, posterior="gaussian", kl="closed")
    units = kl_units(bnn)
    expected = [
        "fc",  # a swapped layer: its weight and bias posteriors count through it
        "attn.out_proj.weight_posterior", "attn.out_proj.bias_posterior",  # posterior attributes, inside a leaf
        "attn.in_proj_weight_posterior", "attn.in_proj_bias_posterior",
        "unused",
    ]
    if mode == "fx":
        expected.append("proj_posterior")  # only the graph route sees F.linear read a raw parameter
    assert list(units) == expected
    layer_posteriors = {id(p) for m in bnn.modules() if isinstance(m, BayesLayer) for p in m.posteriors()}
    assert not any(id(m) in layer_posteriors for m in units.values())
    assert all(isinstance(m, (BayesLayer, BayesParameter)) for m in units.values())
    assert isinstance(units["fc"], BayesLayer) and units["fc"] is bnn.again
    # the forward's KL counts the units it used (not `unused`), each once although `fc` is called twice
    used = [m for name, m in units.items() if name != "unused"]
    assert all(isinstance(m, BayesParameter) for name, m in units.items() if name.startswith("attn"))
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(bnn(x).kl, total_kl(*used))
    torch.testing.assert_close(total_kl(*used), sum(m.kl() for m in used))


def test_kl_units_of_a_deterministic_model_is_empty():
    assert kl_units(nn.Sequential(nn.Linear(2, 2), nn.ReLU())) == {}
