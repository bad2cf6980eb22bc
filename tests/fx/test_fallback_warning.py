"""The warning bayesify gives when it falls back to swap mode lists only fixes that keep the graph route."""

import warnings

import torch
from torch import nn

import autobayes


class _DataDependent(nn.Module):
    """Control flow on a tensor's value: torch.fx cannot trace it, and no argument can be fixed to help."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def test_fallback_warning_does_not_offer_swap_mode_as_a_graph_route():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnn = autobayes.bayesify(_DataDependent())
    messages = [str(w.message) for w in caught if "falls back to mode='swap'" in str(w.message)]
    assert len(messages) == 1, [str(w.message) for w in caught]
    text = messages[0]
    assert "To use the graph route instead" not in text or "mode='swap')" not in text.split("instead:")[1], text
    out, kl = bnn(torch.randn(3, 4))
    assert out.shape == (3, 2) and kl.item() > 0
