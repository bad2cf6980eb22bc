"""Optional forward arguments that default to ``None`` (or a bool flag) are traced as their defaults on the fx route
(issue 14, item 4): before, torch.fx traced ``forward(x, mask=None)`` with a placeholder for ``mask``,
``if mask is not None`` took the branch for a given mask, and the converted model failed at its first forward
(timm's Hiera: ``'NoneType' object has no attribute 'view'``)."""

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
    assert any("mask=None traced as their defaults" in n for n in bnn.bayes_report.notes)


def test_another_value_later_is_a_clear_error_naming_the_argument_and_the_fixes():
    bnn = autobayes.bayesify(Masked(), mode="fx")
    with pytest.raises(UntraceableModelError) as info:
        bnn(torch.randn(2, 4), torch.ones(2, 4))
    msg = str(info.value)
    assert "'mask'" in msg and "concrete_args={'mask': torch.fx.PH}" in msg and "mode='swap'" in msg
    with pytest.raises(UntraceableModelError, match="'mask'"):  # by keyword too (fx names it mask_1)
        bnn(torch.randn(2, 4), mask=torch.ones(2, 4))
    assert bnn(torch.randn(2, 4), mask=None).output.shape == (2, 4)


@pytest.mark.parametrize("how", ["concrete_args", "example_inputs"])
def test_caller_can_trace_the_argument_as_an_input(how):
    x, mask = torch.randn(2, 4), torch.full((2, 4), 2.0)
    kwargs = {"concrete_args": {"mask": torch.fx.PH}} if how == "concrete_args" else {"example_inputs": (x, mask)}
    bnn = autobayes.bayesify(Masked(), mode="fx", **kwargs)
    with autobayes.use_mean(bnn):
        out = bnn(x, mask).output
        torch.testing.assert_close(bnn(x, mask=mask).output, out)
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


class Flagged(nn.Module):
    """timm's ViT forward: ``if attn_mask is not None or is_causal`` (untraceable once only the mask is fixed)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, attn_mask=None, is_causal: bool = False, scale: float = 1.0):
        if attn_mask is not None or is_causal:
            x = x.flip(0)
        return self.fc(x) * scale


def test_bool_defaults_are_traced_as_their_defaults_and_numbers_stay_inputs():
    x = torch.randn(2, 4)
    bnn = autobayes.bayesify(Flagged(), mode="fx")
    with autobayes.use_mean(bnn):
        torch.testing.assert_close(bnn(x, scale=3.0).output, 3.0 * bnn(x).output)  # scale is still an input
    with pytest.raises(UntraceableModelError, match="'is_causal' traced as False"):
        bnn(x, is_causal=True)
    assert bnn(x, is_causal=False).output.shape == (2, 4)


def test_timm_vit_keeps_the_graph_route():
    timm = pytest.importorskip("timm")
    bnn = autobayes.bayesify(timm.create_model("test_vit", pretrained=False, num_classes=3), mode="fx")
    assert bnn(torch.randn(1, 3, 32, 32)).output.shape == (1, 3)
