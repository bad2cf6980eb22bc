"""The capture route on forwards with ``torch.no_grad()`` / ``inference_mode`` / autocast regions (torch.export
captures them as higher-order ops whose body is a submodule of the capture: the rewrite kept failing on it with
"'GraphModule' object has no attribute 'shape'" and fell back to swap mode), and on a layer whose weight has no
element (it crashed the conversion with ZeroDivisionError; now it stays deterministic with its reason).

Each model branches on ``x.dim()`` so that torch.fx cannot trace it and the capture route converts it. Checks:
the route is ``"export"``, under ``use_mean`` the output equals the deterministic model's (float32 round-off:
atol 1e-5), a second batch size runs, the KL is finite, and a pickled copy runs (the region bodies are rebuilt).
"""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from torch import nn

import autobayes

pytestmark = pytest.mark.usefixtures("one_thread")


class _Regions(nn.Module):
    def __init__(self, region: str) -> None:
        super().__init__()
        self.region = region
        self.fc = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def _context(self):
        if self.region == "no_grad":
            return torch.no_grad()
        if self.region == "inference_mode":
            return torch.inference_mode()
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def forward(self, x):
        if x.dim() == 3:  # torch.fx cannot trace a branch on a shape
            x = x.mean(1)
        with self._context():  # a sinusoidal table, as M2M100's positions
            position = torch.arange(x.shape[-1], dtype=torch.float32)
            table = torch.sin(position / 3.0) * 0.1
        return self.out(torch.relu(self.fc(x) + table.float()))


def _convert(model, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return autobayes.bayesify(model, example_inputs=torch.randn(4, 8), **options)


@pytest.mark.parametrize("region", ["no_grad", "inference_mode", "autocast"])
def test_regions_are_captured_and_rewritten(region):
    torch.manual_seed(0)
    model = _Regions(region).eval()
    bnn = _convert(model).eval()
    assert bnn.bayes_report.mode == "export", bnn.bayes_report.notes
    for batch in (4, 6):
        x = torch.randn(batch, 8)
        with torch.no_grad(), autobayes.use_mean(bnn):
            got = bnn(x).output
        assert torch.allclose(got, model(x), atol=1e-5)
        out, kl = bnn(x)
        assert out.shape == (batch, 3) and torch.isfinite(kl) and kl > 0
    copy = pickle.loads(pickle.dumps(bnn))
    with torch.no_grad(), autobayes.use_mean(copy):
        assert torch.allclose(copy(x).output, model(x), atol=1e-5)


def test_a_zero_element_weight_stays_deterministic_with_its_reason():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "Initializing zero-element tensors is a no-op"
        model = nn.Sequential(nn.Linear(4, 0), nn.Flatten(), nn.Linear(0, 3), nn.Linear(3, 2))
        bnn = autobayes.bayesify(model)
    skipped = {r.name: r.reason for r in bnn.bayes_report.skipped}
    assert "zero elements" in skipped["0"] and "zero elements" in skipped["2"]
    assert [r.name for r in bnn.bayes_report.converted] == ["3"]
    out, kl = bnn(torch.randn(5, 4))
    assert out.shape == (5, 2) and torch.isfinite(kl)
