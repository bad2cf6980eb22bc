"""autobayes.fx.swap: a model torch.fx cannot trace falls back to the swap root (with a warning naming the module
and ``mode='swap'``), whose KL counts the layers the forward called, and which pickles."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import autobayes
from autobayes import UntraceableModelError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _nets import Gate, Untraceable, pickle_roundtrip  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_untraceable_falls_back_to_swap_with_warning():
    with pytest.warns(UserWarning, match=r"'gate' \(Gate\).*mode='swap'"):
        bnn = autobayes.bayesify(Untraceable(), posterior="gaussian", kl="closed")
    assert bnn.bayes_report.mode == "swap"
    x = torch.randn(2, 4)
    out, kl = bnn(x)
    torch.testing.assert_close(kl, bnn.fc1.kl() + bnn.fc2.kl())  # the unused layer is not counted
    with autobayes.kl_disabled(bnn):
        assert bnn(x).kl.item() == 0.0
    (out.sum() + kl).backward()
    assert bnn.fc1.weight_posterior.mu.grad is not None
    bnn.eval()
    model = Untraceable().eval()
    bnn2 = autobayes.bayesify(model, mode="swap").eval()
    with autobayes.use_mean(bnn2):
        torch.testing.assert_close(bnn2(x).output, model(x))
    clone = pickle_roundtrip(bnn)
    torch.testing.assert_close(clone(x).kl, bnn(x).kl)


# ---------------------------------------------------------------------------------------------------------------
# messages: the fallback hint names the model's own forward arguments; the report names a root layer
# ---------------------------------------------------------------------------------------------------------------
class GatedWithOptions(nn.Module):
    """Untraceable (``Gate``), with optional forward arguments a user could fix with ``concrete_args``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = Gate()

    def forward(self, x, mask=None, *, return_features: bool = False):
        h = self.gate(self.fc(x if mask is None else x * mask))
        return (h, h) if return_features else h


def _fallback_warning(model) -> str:
    with pytest.warns(UserWarning, match="falls back to mode='swap'") as record:
        autobayes.bayesify(model)
    return " ".join(str(w.message) for w in record if "falls back" in str(w.message))


def test_fallback_hint_suggests_concrete_args_with_the_forwards_own_arguments():
    message = _fallback_warning(GatedWithOptions())
    assert "concrete_args={'mask': None, 'return_features': False}" in message, message
    assert "flag" not in message
    with pytest.raises(UntraceableModelError) as info:
        autobayes.bayesify(GatedWithOptions(), mode="fx")
    assert "concrete_args={'mask': None, 'return_features': False}" in str(info.value)


def test_fallback_hint_omits_concrete_args_when_the_forward_takes_only_its_input():
    message = _fallback_warning(Untraceable())  # forward(self, x): fixing x would fix the data
    assert "concrete_args" not in message and "flag" not in message, message
    assert "leaf_modules=[" in message  # the fix that does apply is still offered


def test_fallback_hint_is_generic_when_the_forward_takes_kwargs():
    class Kwargs(Untraceable):
        def forward(self, x, **options):
            return super().forward(x)

    message = _fallback_warning(Kwargs())
    assert "concrete_args={'<argument name>': <value>}" in message and "flag" not in message, message


def test_report_names_a_converted_root_module_instead_of_root_placeholder():
    text = str(autobayes.bayesify(nn.Linear(4, 2)).bayes_report)
    assert "<root>" not in text
    assert "(the model itself)  Linear" in text, text
