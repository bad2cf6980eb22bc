"""The affine parameters of normalisation layers as posteriors (opt-in through ``layer_types``): exact in ``mean``
mode, the output variance of theory when sampling, the KL by every estimator, running statistics kept as buffers.

Tolerances from standard errors (SE), fixed seeds: over n draws an element's sample variance lies within 4.5 SE
(``var sqrt(2 / (n - 1))``, normal theory) of its theoretical variance, for every element compared; a Monte Carlo
KL averaged over n estimates within 4 SE of the closed form.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import autobayes
from autobayes.kl import closed_kl

pytestmark = pytest.mark.usefixtures("one_thread")

# (norm, input shape): every layer type of autobayes.nn.ATTRIBUTE_LAYERS
NORMS = [
    (lambda: nn.BatchNorm1d(6), (5, 6)),
    (lambda: nn.BatchNorm1d(6), (5, 6, 3)),
    (lambda: nn.BatchNorm2d(6), (4, 6, 3, 3)),
    (lambda: nn.BatchNorm3d(6), (2, 6, 2, 3, 2)),
    (lambda: nn.LayerNorm(6), (4, 3, 6)),
    (lambda: nn.LayerNorm((3, 6), bias=False), (4, 3, 6)),
    (lambda: nn.GroupNorm(2, 6), (4, 6, 5)),
    (lambda: nn.RMSNorm(6), (4, 3, 6)),
]


class Net(nn.Module):
    def __init__(self, norm, channels_first=False):
        super().__init__()
        self.norm = norm
        self.fc = nn.Linear(6, 2)
        self.channels_first = channels_first  # features on dim 1 (BatchNorm, GroupNorm on N-d input)

    def forward(self, x):
        h = self.norm(x)
        return self.fc(h.transpose(1, -1) if self.channels_first else h)


def _ids(case):
    norm = case[0]()
    return f"{type(norm).__name__}-{len(case[1])}d"


def _trained_like(norm):
    """Non-trivial affine parameters and running statistics, as after training."""
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_(1.0, 0.3)
        for name, b in norm.named_buffers():
            if "running" in name:
                b.uniform_(0.5, 1.5)
    return norm


@pytest.mark.parametrize("case", NORMS, ids=[_ids(c) for c in NORMS])
@pytest.mark.parametrize("mode", ["fx", "swap"])
def test_mean_mode_equals_the_twin_and_statistics_stay_buffers(case, mode):
    torch.manual_seed(0)
    norm = _trained_like(case[0]())
    model = Net(norm, channels_first=len(case[1]) > 2 and not isinstance(norm, (nn.LayerNorm, nn.RMSNorm)))
    tname = type(model.norm).__name__
    bnn = autobayes.bayesify(model, mode=mode, layer_types=["Linear", tname], posterior="gaussian")
    record = next(r for r in bnn.bayes_report.converted if r.name == "norm")
    assert record.how == "attribute" and set(record.params) == {n for n, _ in model.norm.named_parameters()}
    x = torch.randn(case[1])
    for train in (False, True):
        model.train(train), bnn.train(train)
        with autobayes.use_mean(bnn):
            assert torch.equal(bnn(x).output, model(x))
    buffers = dict(bnn.norm.named_buffers())
    assert {n for n, _ in model.norm.named_buffers()} == {n for n in buffers if "posterior" not in n}
    state = bnn.state_dict()
    assert "norm.weight_posterior.mu" in state and "norm.weight_posterior.log_var" in state
    if "running_mean" in buffers:
        assert torch.equal(buffers["running_mean"], dict(model.norm.named_buffers())["running_mean"])  # both updated


def test_norms_are_opt_in_with_a_reason_that_says_how():
    model = Net(nn.LayerNorm(6))
    report = autobayes.inspect_model(model)
    reason = next(r.reason for r in report.skipped if r.name == "norm")
    assert "opt-in" in reason and "layer_types=['Linear', 'LayerNorm']" in reason
    plain = autobayes.inspect_model(Net(nn.LayerNorm(6, elementwise_affine=False)), layer_types=["LayerNorm"],
                                    allow_deterministic=True)
    assert [r.name for r in plain.records] == ["fc"]  # no affine parameters: nothing to convert, no record
    bnn = autobayes.bayesify(model, layer_types=["LayerNorm"], overrides={"norm": {"prior_scale": 0.3}})
    assert [r.name for r in bnn.bayes_report.converted] == ["norm"]
    assert float(bnn.norm.weight_posterior.prior.scale) == pytest.approx(0.3)


def test_sampled_layer_norm_output_has_the_variance_of_theory():
    """out_j = xhat_j w_j + b_j with w_j ~ N(mu_w, s_w^2), b_j ~ N(mu_b, s_b^2) independent:
    Var(out_j) = xhat_j^2 s_w^2 + s_b^2 (one draw per forward, shared by the batch)."""
    torch.manual_seed(0)
    model = Net(nn.LayerNorm(6))
    bnn = autobayes.bayesify(model, layer_types=["LayerNorm"], posterior="gaussian", init_scale=0.3)
    x = torch.randn(3, 6)
    xhat = nn.functional.layer_norm(x, (6,)).double()
    n = 3000
    with torch.no_grad():
        draws = torch.stack([bnn.norm(x) for _ in range(n)]).double()
        var = xhat**2 * bnn.norm.weight_posterior.variance.double() + bnn.norm.bias_posterior.variance.double()
    se = var * math.sqrt(2 / (n - 1))
    assert ((draws.var(0) - var).abs() <= 4.5 * se).all()
    assert torch.equal(draws[0, 0], draws[0, 0]) and not torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("method", ["repar", "direct"])
def test_kl_is_the_sum_of_the_posteriors_and_monte_carlo_is_unbiased(method):
    torch.manual_seed(0)
    model = Net(nn.GroupNorm(2, 6), channels_first=True)
    bnn = autobayes.bayesify(model, layer_types=["GroupNorm"], posterior="gaussian", kl=method, n_mc=1, prior_scale=0.5)
    posts = [bnn.norm.weight_posterior, bnn.norm.bias_posterior]
    closed = sum(closed_kl(p.posterior, p.prior, p.mu, p.scale) for p in posts).item()
    x = torch.randn(2, 6, 3)
    with torch.no_grad():
        draws = torch.tensor([bnn(x).kl.item() for _ in range(400)], dtype=torch.float64)
    se = draws.std().item() / math.sqrt(len(draws))
    assert abs(draws.mean().item() - closed) <= 4 * se, (draws.mean().item(), closed, se)
    exact = autobayes.bayesify(model, layer_types=["GroupNorm"], posterior="gaussian", kl="closed", prior_scale=0.5)
    exact.load_state_dict(bnn.state_dict())
    assert exact(x).kl.item() == pytest.approx(closed, rel=1e-5)


def test_gradients_reach_every_posterior_parameter():
    torch.manual_seed(0)
    model = Net(nn.BatchNorm1d(6))
    bnn = autobayes.bayesify(model, layer_types=["Linear", "BatchNorm1d"], posterior="gaussian")
    out, kl = bnn(torch.randn(8, 6))
    (out.pow(2).sum() + kl * 1e-3).backward()
    for name, p in bnn.named_parameters():
        assert p.grad is not None and (p.grad != 0).all(), name
