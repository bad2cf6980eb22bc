"""autobayes.kl.fused_kl (also autobayes.nn.fused_kl): the KL of many tensors at once equals the per-tensor sum."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from scipy import stats
from torch import nn

import autobayes
from autobayes import BayesConfig
from autobayes.nn import BayesLayer, BayesParameter, fused_kl
from autobayes.kl.fused import fusable
from autobayes.posteriors import Gaussian, Laplace

SHAPES = [(6, 5), (4, 3, 3, 3), (7,), (2, 9)]


def _params(configs, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    out = []
    for shape, cfg in zip(SHAPES * 4, configs):
        p = BayesParameter(0.3 * torch.randn(shape, dtype=dtype), cfg, from_weights=True)
        with torch.no_grad():
            p.log_var.uniform_(-3.0, -1.0)
        out.append(p)
    return out


def _value_and_grads(params, fn):
    for p in params:
        p.mu.grad = p.log_var.grad = None
    value = fn(params)
    value.backward()
    return value.detach(), [g.clone() for p in params for g in (p.mu.grad, p.log_var.grad)]


def _per_tensor(params):
    return sum(p.kl() for p in params)


def _assert_fused_equals_per_tensor(params):
    fused, fused_grads = _value_and_grads(params, lambda ps: fused_kl(ps, fuse_on_cpu=True))
    ref, ref_grads = _value_and_grads(params, _per_tensor)
    torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-9)
    for g, r in zip(fused_grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


# fusable: element-wise posteriors, scalar Normal priors (each its own loc and scale), repar or the closed form
FUSABLE = [
    BayesConfig(posterior="gaussian", kl="closed", prior_loc=0.1, prior_scale=0.5),
    BayesConfig(posterior="gaussian", kl="closed", prior_scale=2.0),
    BayesConfig(posterior="laplace", kl="closed", prior_loc=-0.2),
    BayesConfig(posterior="logistic", kl="closed", prior_scale=0.3),
]
# not fusable: a law over the whole tensor, a prior centred on the weights, a non-Normal prior, direct
OTHERS = [
    BayesConfig(posterior="radial", kl="closed"),
    BayesConfig(posterior="gaussian", kl="closed", prior_loc="weights", prior_scale=0.2),
    BayesConfig(posterior="gaussian", kl="closed", prior="laplace"),
    BayesConfig(posterior="gaussian", kl="direct", n_mc=3),
]


def test_which_tensors_are_fused():
    assert all(fusable(p) for p in _params(FUSABLE))
    assert not any(fusable(p) for p in _params(OTHERS))
    assert fusable(_params([BayesConfig(posterior="gaussian", kl="repar")])[0])


def test_closed_forms_fused_equal_the_per_tensor_sum_value_and_gradient():
    _assert_fused_equals_per_tensor(_params(FUSABLE * 2 + OTHERS[:3]))  # two of each fusable family: groups of 2


@pytest.mark.parametrize("n_mc", [1, 50])
def test_repar_fused_equals_per_tensor_given_the_same_statistics(monkeypatch, n_mc):
    """With the noise statistics fixed (any constant a, b >= a^2), the fused estimator is the per-tensor one."""

    def fixed(self, n, shape, *, chunk_size=32, device=None, dtype=None):
        return torch.full(shape, 0.3, device=device, dtype=dtype), torch.full(shape, 1.7, device=device, dtype=dtype)

    monkeypatch.setattr(Gaussian, "noise_statistics", fixed)
    monkeypatch.setattr(Laplace, "noise_statistics", fixed)
    configs = [BayesConfig(posterior=post, kl="repar", n_mc=n_mc, prior_loc=loc, prior_scale=s)
               for post, loc, s in (("gaussian", 0.0, 1.0), ("gaussian", 0.2, 0.5), ("laplace", -0.1, 0.7),
                                    ("laplace", 0.0, 1.5))]
    _assert_fused_equals_per_tensor(_params(configs))


@pytest.mark.parametrize("n_mc", [1, 10])
def test_repar_fused_has_the_law_of_the_per_tensor_estimator(n_mc):
    """Drawn for real: the fused and per-tensor repar KLs of the same tensors agree in law (KS at 1%), and both
    have the closed form as their mean (within 4 standard errors)."""
    configs = [BayesConfig(posterior="gaussian", kl="repar", n_mc=n_mc, prior_loc=0.1 * i, prior_scale=0.5 + 0.3 * i)
               for i in range(4)]
    params = _params(configs, dtype=torch.float32)
    closed = sum(p.kl() for p in _params(
        [BayesConfig(posterior="gaussian", kl="closed", prior_loc=0.1 * i, prior_scale=0.5 + 0.3 * i) for i in range(4)],
        dtype=torch.float32)).item()
    torch.manual_seed(3)
    with torch.no_grad():
        fused = torch.tensor([fused_kl(params, fuse_on_cpu=True).item() for _ in range(1000)], dtype=torch.float64)
        per = torch.tensor([_per_tensor(params).item() for _ in range(1000)], dtype=torch.float64)
    assert stats.ks_2samp(fused.numpy(), per.numpy()).pvalue > 0.01
    for draws in (fused, per):
        se = draws.std().item() / math.sqrt(len(draws))
        assert abs(draws.mean().item() - closed) <= 4 * se, (draws.mean().item(), closed, se)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3, bias=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv2(torch.relu(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize("fuse_on_cpu", [False, True], ids=["cpu-rule", "fused-as-on-a-gpu"])
@pytest.mark.parametrize("mode", ["fx", "swap"])
def test_a_bayesified_models_kl_is_the_sum_over_its_layers(monkeypatch, mode, fuse_on_cpu):
    """Both routes compute the model's KL with the fused sum (concatenating on the CPU too, as a GPU does, in the
    second case); it equals the layers' own KLs (closed form, so exact), with one layer on another prior scale
    (its own group member) and one on a non-fusable prior."""
    monkeypatch.setattr(autobayes.fx.runtime, "fused_kl", functools.partial(fused_kl, fuse_on_cpu=fuse_on_cpu))
    cfg = BayesConfig(posterior="gaussian", kl="closed",
                      overrides={"conv2": {"prior_scale": 0.1}, "fc": {"prior": "laplace"}})
    bnn = autobayes.bayesify(_Net(), cfg, mode=mode)
    kl = bnn(torch.randn(2, 3, 8, 8)).kl
    layers = [m for m in bnn.modules() if isinstance(m, BayesLayer)]
    assert len(layers) == 3
    torch.testing.assert_close(kl, sum(m.kl() for m in layers), rtol=1e-6, atol=0.0)
    with autobayes.kl_disabled(bnn):
        assert bnn(torch.randn(2, 3, 8, 8)).kl.item() == 0.0
