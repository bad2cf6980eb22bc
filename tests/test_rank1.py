"""Rank-1 mixture posteriors: the Monte Carlo KL as a statistic, the per-example forward, conversion on every
route, the batch split, prediction and save / load.

Statistical tolerances, as in tests/test_kl.py: a mean is compared within 4 standard errors (SE) of the
difference (a correct estimator fails a 4-sigma two-sided band with probability ~6e-5 per comparison; the
element-wise gradient checks make ~30 comparisons, so a family-wise false alarm ~2e-3); two-sample
Kolmogorov-Smirnov tests at the 1% level.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import nn

import autobayes
from autobayes import BayesConfig
from autobayes.errors import ConfigError
from autobayes.kl import mixture_kl
from autobayes.models import build_model
from autobayes.nn import BayesConv2d, BayesConvTranspose2d, BayesLinear, BayesParameter, Rank1Parameter
from autobayes.posteriors import Rank1, Rank1Cauchy
from autobayes.priors import Normal

K, D = 3, 5
PRIOR = Normal(torch.tensor(1.0), 0.5)


def _mixture(seed: int = 0):
    """Three well separated components (so the mixture's log-density is far from any one component's)."""
    g = torch.Generator().manual_seed(seed)
    loc = (1.0 + 0.6 * torch.randn(K, D, generator=g)).requires_grad_(True)
    log_var = torch.empty(K, D).uniform_(-3.0, -1.0, generator=g).requires_grad_(True)
    return loc, log_var


def _estimates(method, n_mc, n, seed, chunk_size=32, posterior=Rank1(), params=None):
    loc, log_var = params if params is not None else _mixture()
    torch.manual_seed(seed)
    values, grads = [], []
    for _ in range(n):
        kl = mixture_kl(posterior, PRIOR, loc, log_var, method, n_mc, chunk_size)
        values.append(kl.item())
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(kl, (loc, log_var))]))
    return torch.tensor(values, dtype=torch.float64), torch.stack(grads).double()


def _reference_kl(posterior_cls, n=100_000, seed=7):
    """An independent high-sample estimate with torch.distributions: mean and standard error of
    ``log q(z) - log p(z)`` over ``n`` draws of the mixture (``MixtureSameFamily``)."""
    loc, log_var = (t.detach().double() for t in _mixture())
    scale = torch.exp(0.5 * log_var)
    comp = torch.distributions.Normal if posterior_cls is Rank1 else torch.distributions.Cauchy
    q = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(K, dtype=torch.float64)),
        torch.distributions.Independent(comp(loc, scale), 1))
    torch.manual_seed(seed)
    z = q.sample((n,))
    p = torch.distributions.Normal(torch.tensor(1.0, dtype=torch.float64), 0.5)
    terms = q.log_prob(z) - p.log_prob(z).sum(-1)
    return terms.mean().item(), terms.std().item() / math.sqrt(n)


def test_mixture_kl_is_unbiased_for_a_high_sample_reference():
    """The mean of 600 estimates at n_mc = K (one draw per component) equals the reference within 4 combined
    SE (the estimator's SE from its own spread, the reference's from its 200,000 terms)."""
    ref, ref_se = _reference_kl(Rank1)
    values, _ = _estimates("repar", K, 600, seed=1)
    se = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item() - ref) <= 4 * math.sqrt(se**2 + ref_se**2), (values.mean().item(), ref, se)


def test_one_gaussian_component_matches_the_closed_form_value_and_gradient():
    """K = 1 is a Gaussian: the mean of the estimates and of their gradients equal the closed-form Gaussian
    KL and its gradient within 4 SE (element-wise for the gradient)."""
    loc = (1.0 + 0.5 * torch.randn(1, D, generator=torch.Generator().manual_seed(3))).requires_grad_(True)
    log_var = torch.full((1, D), -2.0, requires_grad=True)
    values, grads = _estimates("repar", 2, 600, seed=2, params=(loc, log_var))
    q = torch.distributions.Normal(loc, torch.exp(0.5 * log_var))
    closed = torch.distributions.kl_divergence(q, torch.distributions.Normal(1.0, 0.5)).sum()
    g_closed = torch.cat([g.reshape(-1) for g in torch.autograd.grad(closed, (loc, log_var))]).double()
    se = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item() - closed.item()) <= 4 * se
    g_se = grads.std(0) / math.sqrt(len(grads))
    assert torch.all((grads.mean(0) - g_closed).abs() <= 4 * g_se + 1e-6)


def test_repar_equals_direct_on_one_random_stream():
    """With every draw in one chunk, both estimators consume the same noise: equal value and gradient."""
    loc, log_var = _mixture()
    out = []
    for method in ("repar", "direct"):
        torch.manual_seed(5)
        kl = mixture_kl(Rank1(), PRIOR, loc, log_var, method, n_mc=12, chunk_size=64)
        out.append((kl.detach(), torch.autograd.grad(kl, (loc, log_var))))
    assert torch.allclose(out[0][0], out[1][0], rtol=1e-5)
    for a, b in zip(out[0][1], out[1][1]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("posterior", [Rank1(), Rank1Cauchy()], ids=["gaussian", "cauchy"])
def test_repar_in_chunks_and_direct_have_the_same_law_and_unbiased_gradients(posterior):
    """repar one draw per chunk (chunk_size=1: the surrogate accumulates across chunks) against direct, on
    independent streams: KS at 1%, means within 4 SE; the mean gradients agree element-wise within 4 combined
    SE, and (Gaussian) the value is unbiased for the independent reference."""
    n_mc = 2 * K
    repar, g_repar = _estimates("repar", n_mc, 400, seed=11, chunk_size=1, posterior=posterior)
    direct, g_direct = _estimates("direct", n_mc, 400, seed=12, posterior=posterior)
    assert stats.ks_2samp(repar.numpy(), direct.numpy()).pvalue > 0.01
    se = math.sqrt(repar.var().item() / len(repar) + direct.var().item() / len(direct))
    assert abs(repar.mean().item() - direct.mean().item()) <= 4 * se
    g_se = torch.sqrt(g_repar.var(0) / len(g_repar) + g_direct.var(0) / len(g_direct))
    assert torch.all((g_repar.mean(0) - g_direct.mean(0)).abs() <= 4 * g_se + 1e-6)
    ref, ref_se = _reference_kl(type(posterior))
    both = torch.cat([repar, direct])
    se_both = both.std().item() / math.sqrt(len(both))
    assert abs(both.mean().item() - ref) <= 4 * math.sqrt(se_both**2 + ref_se**2), (both.mean().item(), ref)


# ---------------------------------------------------------------------------------------------------- layers
def _spread(param: Rank1Parameter, seed: int = 0) -> None:
    """Move the component means off 1 (as training does) so that the factors matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        param.factor_loc.add_(0.3 * torch.randn(param.factor_loc.shape, generator=g))
        param.factor_log_var.fill_(-4.0)


@pytest.mark.parametrize("make, x", [
    (lambda cfg: BayesLinear(6, 4, config=cfg), torch.randn(5, 3, 6)),
    (lambda cfg: BayesConv2d(4, 6, 3, groups=2, config=cfg), torch.randn(5, 4, 7, 7)),
    (lambda cfg: BayesConvTranspose2d(4, 6, 3, stride=2, groups=2, config=cfg), torch.randn(5, 4, 5, 5)),
], ids=["linear", "conv2d-groups", "convtranspose2d-groups"])
def test_per_example_forward_is_the_explicit_rank1_weight(make, x):
    """op(x o s, W) o r + b equals op(x_i, W o (r_i s_i^T)) + b example by example (the same draws: a seed)."""
    layer = make(BayesConfig(posterior="rank1", components=3))
    wp = layer.weight_posterior
    _spread(wp)
    wp.draw_seed = 123
    y = layer(x)
    r, s = wp.example_factors(x.shape[0])
    for i in range(x.shape[0]):
        outer = r[i].reshape(-1, 1) * s[i].reshape(1, -1)
        w = wp.mu * outer.reshape(*outer.shape, *([1] * (wp.mu.dim() - 2)))
        expected = layer._op(x[i:i + 1], w, layer.bias_posterior.mu)
        assert torch.allclose(y[i:i + 1], expected, atol=1e-5)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 3))


@pytest.mark.parametrize("mode", ["fx", "swap", "export"])
def test_conversion_starts_at_the_deterministic_model_on_every_route(mode):
    """factor_init_std=0 (a pretrained model fine-tuned from its own function): every component is the model."""
    net, x = _net(), torch.randn(4, 2, 6, 6)
    bnn = autobayes.bayesify(net, posterior="rank1", factor_init_std=0.0, mode=mode,
                             example_inputs=x if mode == "export" else None)
    assert bnn.bayes_report.mode == mode
    with autobayes.use_mean(bnn):
        out, kl = bnn(x)
    assert torch.equal(out, net(x)) and kl.item() > 0
    posts = [m for m in bnn.modules() if isinstance(m, Rank1Parameter)]
    weights = [p for p in posts if p.factor_dims]  # the biases are point estimates
    assert len(posts) == 6 and len(weights) == 3
    assert all(torch.equal(p.factor_loc, torch.ones_like(p.factor_loc)) for p in weights)
    out, kl = bnn(x)
    (out.square().mean() + kl).backward()
    assert weights[0].factor_loc.grad is not None and posts[0].mu.grad is not None
    n_var = sum(p.numel() for p in bnn.parameters())
    assert bnn.bayes_report.n_params_bayesian == n_var  # W + the factors' means and log-variances


def test_default_is_rank1_with_components_spread_around_one():
    """The default posterior is rank-1 with n_mc = K. Its component means start spread around 1 with the
    converted weights as their average: per tensor, mean_k(r_k s_k^T) is the all-ones matrix (to rounding), so
    use_mean still gives the deterministic model; the offsets' mean square across the components estimates
    std^2 = 0.25 per element (u_i^2 with u_i ~ N(0, 0.25): SE sqrt(2) 0.25 / sqrt(n) over n elements, within 4 SE);
    factor_init_std=0 leaves them at exactly 1."""
    torch.manual_seed(0)
    model = build_model("digits_cnn", num_classes=4, in_channels=1, image_size=8)
    bnn = autobayes.bayesify(model)
    assert bnn.bayes_config.posterior == "rank1" and bnn.bayes_config.n_mc is None
    posts = [p for p in bnn.modules() if isinstance(p, Rank1Parameter) and p.factor_dims]
    assert all(p.n_mc == p.components == 4 for p in posts)
    for p in posts:
        d0 = p.factor_dims[0]
        loc = p.factor_loc.detach()
        outer = torch.einsum("ki,kj->ij", loc[:, :d0], loc[:, d0:]) / p.components
        assert torch.allclose(outer, torch.ones_like(outer), atol=1e-5)
    square = torch.cat([(p.factor_loc.detach() - 1).square().mean(0) for p in posts])
    assert abs(square.mean().item() - 0.25) <= 4 * math.sqrt(2) * 0.25 / math.sqrt(square.numel())
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad(), autobayes.use_mean(bnn):
        assert torch.allclose(bnn(x).output, model(x), atol=1e-5)
    still = autobayes.bayesify(model, factor_init_std=0.0, n_mc=12)
    assert all(torch.equal(p.factor_loc, torch.ones_like(p.factor_loc)) and p.n_mc == 12
               for p in still.modules() if isinstance(p, Rank1Parameter) and p.factor_dims)
    with pytest.raises(ConfigError, match="factor_init_std"):
        BayesConfig(factor_init_std=-1.0)


class _FixedNoise(Rank1):
    """Rank1 whose noise is read from ``table`` (``(m, K, D_total)``): a fused call gets all of it, a call for one
    tensor the columns ``[start, start + D)`` it asks for in turn, so the fused and per-tensor estimators see the
    same draws."""

    def __init__(self, table, widths):
        super().__init__()
        self.table, self.starts = table, iter(torch.tensor([0, *widths]).cumsum(0).tolist())

    def sample_noise(self, n, shape, *, device=None, dtype=None):
        if shape[-1] == self.table.shape[-1]:
            return self.table[:n].clone()
        start = next(self.starts)
        return self.table[:n, :, start:start + shape[-1]].clone()


@pytest.mark.parametrize("method, n_mc", [("repar", 4), ("repar", 8), ("direct", 8)])
def test_fused_mixture_kl_is_the_sum_of_the_per_tensor_estimates(method, n_mc):
    """Every rank-1 layer's KL estimated on one concatenation equals the sum of the layers' own estimates on the
    same draws (value and gradient), for one draw per component (built in the graph) and for several (the
    surrogate); two priors of different scales and a point-estimated bias ride along."""
    from autobayes.kl import fused_kl

    torch.manual_seed(0)
    cfgs = [BayesConfig(components=2, kl=method, n_mc=n_mc, prior_scale=s) for s in (1.0, 0.3)]
    params = [BayesParameter(torch.randn(3, 4), cfgs[0]), BayesParameter(torch.randn(5, 2), cfgs[1]),
              BayesParameter(torch.randn(5), cfgs[0])]
    widths = [p.factor_loc.shape[1] for p in params[:2]]
    table = torch.randn(n_mc // 2, 2, sum(widths))
    results = []
    for fused in (True, False):
        noise = _FixedNoise(table, widths)  # one reader: the per-tensor calls take their columns in turn
        for p in params[:2]:
            p.posterior = noise
        kl = fused_kl(params) if fused else sum(p.kl() for p in params)
        leaves = [t for p in params[:2] for t in (p.factor_loc, p.factor_log_var)]
        results.append((kl.detach(), torch.autograd.grad(kl, leaves)))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_attribute_route_weights_are_rank1_draws():
    """A module that keeps its own forward (nn.MultiheadAttention's in_proj_weight) reads W o (r s^T) draws."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 5, 8)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = mha

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    net = Net()
    bnn = autobayes.bayesify(net, posterior="rank1", factor_init_std=0.0, mode="swap", example_inputs=x)
    assert isinstance(bnn.attn.in_proj_weight_posterior, Rank1Parameter)
    with autobayes.use_mean(bnn):
        assert torch.allclose(bnn(x).output, net(x), atol=1e-6)
    _spread(bnn.attn.in_proj_weight_posterior)
    a, b = bnn(x).output, bnn(x).output
    assert not torch.allclose(a, b)


def _members(bnn, x):
    """The output of each of the K members (component k in every layer, noise switched off)."""
    outs = []
    for k in range(bnn[0].weight_posterior.components):
        h = x
        for layer in bnn:
            if isinstance(layer, BayesLinear):
                wp = layer.weight_posterior
                d0 = wp.factor_dims[0]
                r, s = wp.factor_loc[k, :d0], wp.factor_loc[k, d0:]
                h = torch.nn.functional.linear(h, wp.mu * torch.outer(r, s), layer.bias_posterior.mu)
            else:
                h = layer(h)
        outs.append(h)
    return torch.stack(outs)


def test_a_component_is_a_whole_network_and_predict_averages_over_components():
    """Noise off (log-variance -40): a batch of K copies of one input gives exactly the K members' outputs
    (a permutation: each layer uses the same component for an example), and predict with n_samples = 2K
    (one forward of the batch repeated 2K times) returns the average of the members' probabilities."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    bnn = autobayes.bayesify(net, posterior="rank1", components=4)
    for i, layer in enumerate(m for m in bnn.modules() if isinstance(m, BayesLinear)):
        _spread(layer.weight_posterior, seed=i)
        with torch.no_grad():
            layer.weight_posterior.factor_log_var.fill_(-40.0)
    x = torch.randn(1, 3)
    with torch.no_grad():
        members = _members(bnn, x)[:, 0]  # (K, 2)
        out = bnn(x.repeat(4, 1)).output
    dist = torch.cdist(out, members)
    assert torch.equal(dist.argmin(1).sort().values, torch.arange(4)) and dist.min(1).values.max() < 1e-5
    summary = autobayes.predict(bnn, x, n_samples=8, progress=False)
    assert torch.allclose(summary.mean[0], members.softmax(-1).mean(0), atol=1e-5)
    assert summary.mutual_information[0] > 0


def test_save_and_load_round_trip(tmp_path):
    model = build_model("digits_cnn", num_classes=4, in_channels=1, image_size=8)
    bnn = autobayes.bayesify(model, posterior="rank1", components=3)
    for p in bnn.modules():
        if isinstance(p, Rank1Parameter) and p.factor_dims:
            _spread(p)
    path = autobayes.save(bnn, tmp_path / "r1.safetensors")
    loaded = autobayes.load(path)
    assert loaded.bayes_config.components == 3 and loaded.bayes_config.posterior == "rank1"
    a, b = bnn.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(6, 1, 8, 8)
    p1 = autobayes.predict(bnn, x, n_samples=8, seed=0, progress=False).mean
    p2 = autobayes.predict(loaded, x, n_samples=8, seed=0, progress=False).mean
    assert torch.allclose(p1, p2)


def test_config_validation_names_the_fix():
    with pytest.raises(ConfigError, match="kl='repar'"):
        BayesConfig(posterior="rank1", kl="closed")
    with pytest.raises(ConfigError, match="centred at 1"):
        BayesConfig(posterior="rank1", prior_loc="weights")
    with pytest.raises(ConfigError, match="components"):
        BayesConfig(posterior="rank1", components=0)
    cfg = BayesConfig(posterior="rank1_cauchy", components=2, kl="direct")
    assert BayesConfig.from_dict(cfg.to_dict()) == cfg
    p = BayesParameter(torch.randn(3, 4), cfg)
    assert isinstance(p, Rank1Parameter) and p.kl_method == "direct" and p.kl().dim() == 0
    assert isinstance(BayesParameter(torch.randn(3), BayesConfig(posterior="gaussian")), BayesParameter)
