"""autobayes.fx.rewrite: the traced forward becomes one that returns ``BayesOutput(output, kl)``: parameter reads
become posterior samples (functional weights too, buffers and other parameters stay), the KL of every layer the
forward uses is summed once, and a forward with a train-only branch gets a graph per mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import autobayes
from autobayes.nn import BayesLinear, BayesParameter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _nets import Functional, Shared, SmallCNN  # noqa: E402
from _zoo_check import check_conversion  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_output_is_named_tuple_and_samples_in_eval_mode():
    bnn = autobayes.bayesify(SmallCNN())
    x = torch.randn(2, 3, 8, 8)
    bnn.eval()
    res = bnn(x)
    assert isinstance(res, autobayes.BayesOutput) and res.output.shape == (2, 5) and res.kl.dim() == 0
    assert not torch.equal(bnn(x).output, bnn(x).output)  # MC prediction works in eval mode
    with autobayes.use_mean(bnn):
        torch.testing.assert_close(bnn(x).output, bnn(x).output)


def test_shared_layer_kl_counted_once():
    bnn = autobayes.bayesify(Shared(), posterior="gaussian", kl="closed")
    assert bnn.block is bnn.alias and isinstance(bnn.block, BayesLinear)
    out, kl = bnn(torch.randn(3, 6))
    torch.testing.assert_close(kl, bnn.block.kl() + bnn.head.kl())
    swapped = autobayes.bayesify(Shared(), mode="swap", posterior="gaussian", kl="closed")
    _, kl = swapped(torch.randn(3, 6))
    torch.testing.assert_close(kl, swapped.block.kl() + swapped.head.kl())


def test_functional_weights():
    model = Functional()
    x, img = torch.randn(2, 4), torch.randn(2, 3, 6, 6)
    bnn = check_conversion(model, x, img, posterior="gaussian", kl="closed")
    assert isinstance(bnn.w_posterior, BayesParameter) and isinstance(bnn.b_posterior, BayesParameter)
    assert isinstance(bnn.kernel_posterior, BayesParameter)
    params = dict(bnn.named_parameters())
    for kept in ("gamma", "pos"):
        assert kept in params  # layer scale and position embedding stay deterministic
    assert "blur" in dict(bnn.named_buffers())
    assert "w" not in params and not any("blur_posterior" in n for n, _ in bnn.named_modules())
    out, kl = bnn(x, img)
    torch.testing.assert_close(kl, bnn.w_posterior.kl() + bnn.b_posterior.kl() + bnn.kernel_posterior.kl())
    assert bnn.w.shape == (8, 4)  # the attribute now returns a posterior sample
    rec = bnn.bayes_report.get("")
    assert rec is not None and rec.how == "functional"


def test_train_only_branch():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.aux = nn.Linear(4, 2)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            h = self.body(x)
            if self.training:
                return self.head(h), self.aux(h)
            return self.head(h)

    model = Aux().eval()  # traced in its current mode *and* in the other one
    bnn = autobayes.bayesify(model, posterior="gaussian", kl="closed")
    x = torch.randn(2, 4)
    _, kl_eval = bnn(x)
    torch.testing.assert_close(kl_eval, bnn.body.kl() + bnn.head.kl())
    bnn.train()
    (out, aux), kl_train = bnn(x)
    torch.testing.assert_close(kl_train, bnn.body.kl() + bnn.head.kl() + bnn.aux.kl())
