"""Optional forward arguments that default to ``None`` are traced as ``None`` on the fx route (issue 14, item 4):
before, torch.fx traced ``forward(x, mask=None)`` with a placeholder for ``mask``, ``if mask is not None`` took the
branch for a given mask, and the converted model failed at its first forward (timm's Hiera:
``'NoneType' object has no attribute 'view'``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import autobayes
from autobayes import UntraceableModelError

pytestmark = pytest.mark.usefixtures("one_thread")


class Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, mask=None):
        if mask is not None:
            x = x * mask.view(x.shape)  # fails on None, as in Hiera
        return self.fc(x)


def test_none_default_is_traced_as_none():
    x = torch.randn(2, 4)
    bnn = autobayes.bayesify(Masked(), mode="fx")
    assert bnn.bayes_report.mode == "fx"
    with autobayes.use_mean(bnn):
        out = bnn(x).output
    det = Masked()
    det.load_state_dict({"fc.weight": bnn.fc.weight_posterior.mu, "fc.bias": bnn.fc.bias_posterior.mu})
    torch.testing.assert_close(out, det(x))
    assert any("mask" in n and "traced as None" in n for n in bnn.bayes_report.notes)


def test_another_value_later_is_a_clear_error_naming_the_argument_and_the_fixes():
    bnn = autobayes.bayesify(Masked(), mode="fx")
    with pytest.raises(UntraceableModelError) as info:
        bnn(torch.randn(2, 4), torch.ones(2, 4))
    msg = str(info.value)
    assert "'mask'" in msg and "concrete_args={'mask': torch.fx.PH}" in msg and "mode='swap'" in msg


@pytest.mark.parametrize("how", ["concrete_args", "example_inputs"])
def test_caller_can_trace_the_argument_as_an_input(how):
    x, mask = torch.randn(2, 4), torch.full((2, 4), 2.0)
    kwargs = {"concrete_args": {"mask": torch.fx.PH}} if how == "concrete_args" else {"example_inputs": (x, mask)}
    bnn = autobayes.bayesify(Masked(), mode="fx", **kwargs)
    with autobayes.use_mean(bnn):
        out = bnn(x, mask).output
    det = Masked()
    det.load_state_dict({"fc.weight": bnn.fc.weight_posterior.mu, "fc.bias": bnn.fc.bias_posterior.mu})
    torch.testing.assert_close(out, det(x, mask))


def test_fixed_none_survives_pickling():
    import pickle

    bnn = pickle.loads(pickle.dumps(autobayes.bayesify(Masked(), mode="fx")))
    assert bnn(torch.randn(2, 4)).output.shape == (2, 4)
    with pytest.raises(UntraceableModelError, match="'mask'"):
        bnn(torch.randn(2, 4), torch.ones(2, 4))


def test_timm_hiera_converts_by_fx_and_runs_its_first_forward():
    timm = pytest.importorskip("timm")
    model = timm.create_model("hiera_tiny_224", pretrained=False, num_classes=3)
    bnn = autobayes.bayesify(model, mode="fx")
    out, kl = bnn(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 3) and torch.isfinite(kl) and kl > 0
