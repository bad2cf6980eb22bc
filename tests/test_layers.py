"""Bayesian layers against their deterministic twins, and their sampling variance as a statistic."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from autobayes import BayesConfig, ConfigError
from autobayes.nn import BayesLinear, get_default_mappings

# (deterministic type, constructor kwargs, input shape): kernel sizes incl. non-square, stride, padding incl.
# 'same' and reflect, dilation, groups, output_padding, bias on/off.
GRID = [
    (nn.Linear, dict(in_features=7, out_features=5), (3, 7)),
    (nn.Linear, dict(in_features=7, out_features=5, bias=False), (2, 4, 7)),
    (nn.Conv1d, dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1), (2, 4, 11)),
    (nn.Conv1d, dict(in_channels=4, out_channels=6, kernel_size=4, padding="same", padding_mode="circular", dilation=2), (2, 4, 12)),
    (nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), bias=False), (2, 4, 9, 8)),
    (nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=3, padding="same", padding_mode="reflect"), (2, 4, 8, 8)),
    (nn.Conv2d, dict(in_channels=4, out_channels=8, kernel_size=3, groups=2, dilation=2, padding=2, padding_mode="replicate"), (2, 4, 9, 9)),
    (nn.Conv2d, dict(in_channels=4, out_channels=4, kernel_size=3, groups=4, padding="same"), (2, 4, 7, 7)),
    (nn.Conv3d, dict(in_channels=2, out_channels=3, kernel_size=(2, 3, 1), stride=(1, 2, 1), padding=1), (1, 2, 5, 6, 4)),
    (nn.ConvTranspose1d, dict(in_channels=4, out_channels=3, kernel_size=3, stride=2, output_padding=1), (2, 4, 6)),
    (nn.ConvTranspose2d, dict(in_channels=4, out_channels=6, kernel_size=(3, 4), stride=2, padding=1, output_padding=1, groups=2, bias=False), (2, 4, 5, 5)),
    (nn.ConvTranspose2d, dict(in_channels=4, out_channels=2, kernel_size=3, dilation=2), (1, 4, 5, 6)),
    (nn.ConvTranspose3d, dict(in_channels=2, out_channels=2, kernel_size=2, stride=2), (1, 2, 3, 3, 2)),
]


def _ids(case):
    cls, kwargs, _ = case
    return cls.__name__ + "-" + "-".join(f"{k}={v}" for k, v in kwargs.items() if k not in ("in_channels", "out_channels", "in_features", "out_features"))


@pytest.mark.parametrize("case", GRID, ids=[_ids(c) for c in GRID])
@pytest.mark.parametrize("posterior", ["gaussian", "radial"])
def test_mean_mode_reproduces_the_twin_forward_and_backward(case, posterior):
    cls, kwargs, shape = case
    torch.manual_seed(0)
    twin = cls(**kwargs)
    layer = get_default_mappings()[cls].from_deterministic(twin, BayesConfig(posterior=posterior, forward="mean"))
    x1 = torch.randn(shape, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y_twin, y_bayes = twin(x1), layer(x2)
    torch.testing.assert_close(y_bayes, y_twin)
    g = torch.randn_like(y_twin)
    y_twin.backward(g)
    y_bayes.backward(g)
    torch.testing.assert_close(x2.grad, x1.grad)
    torch.testing.assert_close(layer.weight_posterior.mu.grad, twin.weight.grad)
    if twin.bias is not None:
        torch.testing.assert_close(layer.bias_posterior.mu.grad, twin.bias.grad)
    # to_deterministic gives back an equal twin
    back = layer.to_deterministic()
    assert type(back) is cls
    torch.testing.assert_close(back(x1.detach()), y_twin.detach())


def test_conv_transpose_output_size_argument():
    twin = nn.ConvTranspose2d(3, 2, 3, stride=2)
    layer = get_default_mappings()[nn.ConvTranspose2d].from_deterministic(twin, BayesConfig(forward="mean"))
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(layer(x, [12, 12]), twin(x, [12, 12]))


@pytest.mark.parametrize("posterior", ["gaussian", "radial"])
@pytest.mark.parametrize("forward", ["local", "sample"])
def test_sampled_outputs_have_the_posterior_variance(posterior, forward):
    """Var[y_k] = sum_j x_j^2 sigma_kj^2 E[xi^2] + sigma_bk^2 E[xi_b^2] for a linear layer (uncorrelated noise).

    n = 4000 draws: the relative SE of a sample variance is sqrt(2 / n) = 2.2%, so 4 SE = 9%; we also check the
    mean within 4 SE.
    """
    torch.manual_seed(1)
    layer = BayesLinear(6, 3, config=BayesConfig(posterior=posterior, forward=forward, init_log_var=(-1.0, 0.0)))
    x = torch.randn(1, 6)
    n = 4000
    with torch.no_grad():
        if forward == "local":
            ys = layer(x.expand(n, 6))  # independent noise per example
        else:
            ys = torch.cat([layer(x) for _ in range(n)])  # one weight draw per forward
        w, b = layer.weight_posterior, layer.bias_posterior
        expected_var = (x**2 * w.variance).sum(1) + b.variance
        expected_mean = x @ w.mu.t() + b.mu
    var = ys.var(0)
    assert torch.all((var / expected_var - 1).abs() < 4 * math.sqrt(2 / n)), (var, expected_var)
    assert torch.all((ys.mean(0) - expected_mean[0]).abs() < 4 * torch.sqrt(expected_var / n))


def test_weight_sampling_shares_one_draw_across_the_batch_and_local_does_not():
    torch.manual_seed(2)
    x = torch.randn(1, 5).expand(4, 5)
    for posterior, forward, shared in (("radial", "sample", True), ("gaussian", "local", False)):
        layer = BayesLinear(5, 2, config=BayesConfig(posterior=posterior, forward=forward))
        y = layer(x)
        assert torch.allclose(y[0], y[1]) is shared
        assert layer.per_example_noise is (not shared)


def test_auto_forward_follows_the_posterior():
    assert BayesLinear(2, 2, config=BayesConfig(posterior="gaussian")).forward_mode == "local"
    assert BayesLinear(2, 2, config=BayesConfig(posterior="radial")).forward_mode == "sample"


@pytest.mark.parametrize("posterior", ["gaussian", "radial"])
def test_state_dict_round_trip_restores_identical_outputs(posterior):
    torch.manual_seed(3)
    cfg = BayesConfig(posterior=posterior, prior_loc="weights", prior_scale=0.5)
    a = get_default_mappings()[nn.Conv2d].from_deterministic(nn.Conv2d(3, 4, 3), cfg)
    b = get_default_mappings()[nn.Conv2d].from_deterministic(nn.Conv2d(3, 4, 3), cfg)
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) >= {"weight_posterior.mu", "weight_posterior.log_var", "weight_posterior.prior.loc"}
    x = torch.randn(2, 3, 6, 6)
    torch.manual_seed(4)
    ya, kla = a(x), a.kl()
    torch.manual_seed(4)
    yb, klb = b(x), b.kl()
    torch.testing.assert_close(ya, yb)
    torch.testing.assert_close(kla, klb)
    c = copy.deepcopy(a)
    torch.manual_seed(4)
    torch.testing.assert_close(c(x), ya)


def test_from_deterministic_keeps_weights_and_sets_scales():
    lin = nn.Linear(4, 3)
    layer = BayesLinear.from_deterministic(lin, BayesConfig(init_scale=1e-3))
    assert torch.equal(layer.weight, lin.weight) and torch.equal(layer.bias, lin.bias)
    torch.testing.assert_close(layer.weight_posterior.scale, torch.full((3, 4), 1e-3))
    moped = BayesLinear.from_deterministic(lin, BayesConfig(moped_delta=0.1))
    torch.testing.assert_close(moped.weight_posterior.scale, 0.1 * lin.weight.detach().abs())
    fresh = BayesLinear(50, 40)
    lv = fresh.weight_posterior.log_var
    assert lv.min() >= -3 and lv.max() <= -2  # default log-variance range of the paper repository
    centred = BayesLinear.from_deterministic(lin, BayesConfig(prior_loc="weights"))
    assert torch.equal(centred.weight_posterior.prior.loc, lin.weight.detach())
    # the original module is untouched
    assert isinstance(lin.weight, nn.Parameter) and lin.weight.requires_grad


def test_kl_gradients_reach_every_posterior_parameter():
    layer = BayesLinear(3, 2, config=BayesConfig(posterior="gaussian", kl="repar", n_mc=10))
    (layer(torch.randn(4, 3)).sum() + layer.kl()).backward()
    for p in layer.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_to_dtype_moves_priors_too():
    layer = BayesLinear.from_deterministic(nn.Linear(3, 2), BayesConfig(prior_loc="weights")).to(torch.float64)
    assert layer.weight_posterior.prior.loc.dtype == torch.float64
    assert layer(torch.randn(2, 3, dtype=torch.float64)).dtype == torch.float64
    assert layer.kl().dtype == torch.float64


def test_from_deterministic_rejects_the_wrong_type():
    with pytest.raises(ConfigError, match="expects an instance of Linear, got Conv2d"):
        BayesLinear.from_deterministic(nn.Conv2d(1, 1, 1))
