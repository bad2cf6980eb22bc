"""autobayes.fx.swap: a model torch.fx cannot trace falls back to the swap root (with a warning naming the module
and ``mode='swap'``), whose KL counts the layers the forward called, and which pickles."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import autobayes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _nets import Untraceable, pickle_roundtrip  # noqa: E402

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
