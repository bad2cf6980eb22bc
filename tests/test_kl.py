"""The KL estimators as statistics.

Every comparison uses a fixed seed and a tolerance stated from the standard error (SE) of the quantities
compared: means within 4 SE (a two-sided 4-sigma band: a correct estimator fails it with probability ~6e-5
per comparison), standard deviations within 10% (the SE of a sample standard deviation over n = 2000 draws is
~1.6%, so 10% is > 4 SE of the difference), and two-sample Kolmogorov-Smirnov tests at the 1% level.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from autobayes.errors import NoClosedFormError
from autobayes.kl import closed_kl, direct_kl, kl_divergence, repar_kl
from autobayes.posteriors import POSTERIORS, Gaussian, Posterior, Radial, radial_noise_entropy, register_posterior
from autobayes.priors import Normal

N_DRAWS = 2000
SHAPE = (4, 5)


def _params(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = (0.5 * torch.randn(SHAPE, generator=g)).requires_grad_(True)
    log_var = torch.empty(SHAPE).uniform_(-3, -1, generator=g).requires_grad_(True)
    return mu, log_var


def _draws(estimator, posterior, prior, n_mc, n=N_DRAWS, seed=0, grads=False):
    """n independent estimates (and, optionally, their gradients w.r.t. mu and log_var)."""
    mu, log_var = _params()
    torch.manual_seed(seed)
    values, g_mu, g_lv = [], [], []
    for _ in range(n):
        kl = estimator(posterior, prior, mu, torch.exp(0.5 * log_var), n_mc)
        values.append(kl.item())
        if grads:
            gm, gl = torch.autograd.grad(kl, (mu, log_var))
            g_mu.append(gm)
            g_lv.append(gl)
    values = torch.tensor(values, dtype=torch.float64)
    if grads:
        return values, torch.stack(g_mu).double(), torch.stack(g_lv).double()
    return values


def _closed(posterior, prior):
    mu, log_var = _params()
    kl = closed_kl(posterior, prior, mu, torch.exp(0.5 * log_var))
    g_mu, g_lv = torch.autograd.grad(kl, (mu, log_var))
    return kl.item(), g_mu.double(), g_lv.double()


def _assert_means_close(x, y, what):
    """Means of two independent samples within 4 combined standard errors."""
    se = math.sqrt(x.var().item() / len(x) + y.var().item() / len(y))
    assert abs(x.mean().item() - y.mean().item()) <= 4 * se + 1e-9, (what, x.mean().item(), y.mean().item(), se)


PRIOR = Normal(torch.tensor(0.1), 0.7)


@pytest.mark.parametrize("posterior", [Gaussian(), Radial()], ids=["gaussian", "radial"])
@pytest.mark.parametrize("n_mc", [1, 10, 100])
def test_repar_and_direct_have_the_same_law(posterior, n_mc):
    repar = _draws(repar_kl, posterior, PRIOR, n_mc, seed=1)
    direct = _draws(direct_kl, posterior, PRIOR, n_mc, seed=2)
    assert stats.ks_2samp(repar.numpy(), direct.numpy()).pvalue > 0.01
    _assert_means_close(repar, direct, "mean repar vs direct")
    assert abs(repar.std().item() / direct.std().item() - 1) <= 0.10
    # Both are unbiased for the closed form: the mean of each is within 4 SE of it.
    closed, _, _ = _closed(posterior, PRIOR)
    for name, sample in (("repar", repar), ("direct", direct)):
        se = sample.std().item() / math.sqrt(len(sample))
        assert abs(sample.mean().item() - closed) <= 4 * se, (name, sample.mean().item(), closed, se)


@pytest.mark.parametrize("posterior", [Gaussian(), Radial()], ids=["gaussian", "radial"])
@pytest.mark.parametrize("n_mc", [1, 10])
def test_expected_gradients_match_direct_and_closed(posterior, n_mc):
    _, rg_mu, rg_lv = _draws(repar_kl, posterior, PRIOR, n_mc, n=1000, seed=3, grads=True)
    _, dg_mu, dg_lv = _draws(direct_kl, posterior, PRIOR, n_mc, n=1000, seed=4, grads=True)
    _, cg_mu, cg_lv = _closed(posterior, PRIOR)
    for r, d, c in ((rg_mu, dg_mu, cg_mu), (rg_lv, dg_lv, cg_lv)):
        n = r.shape[0]
        se_r = r.std(0) / math.sqrt(n)
        se_d = d.std(0) / math.sqrt(n)
        # element-wise, 4 combined SE (plus a float32 rounding floor)
        assert torch.all((r.mean(0) - d.mean(0)).abs() <= 4 * torch.sqrt(se_r**2 + se_d**2) + 1e-6)
        assert torch.all((r.mean(0) - c).abs() <= 4 * se_r + 1e-6)


def test_gaussian_repar_value_and_gradient_equal_direct_given_the_statistics():
    """Given the same noise, the (a, b) rewrite is algebraically the direct estimator."""
    from autobayes.kl import normal_cross_entropy

    mu, log_var = _params()
    torch.manual_seed(5)
    xi = torch.randn(7, *SHAPE)
    scale = torch.exp(0.5 * log_var)
    direct = -PRIOR.log_prob(mu + scale * xi).sum() / 7 - Gaussian().entropy(scale)
    scale = torch.exp(0.5 * log_var)
    repar = normal_cross_entropy(mu, scale, PRIOR, xi.mean(0), (xi * xi).mean(0)) - Gaussian().entropy(scale)
    torch.testing.assert_close(repar, direct)
    g1 = torch.autograd.grad(repar, (mu, log_var))
    g2 = torch.autograd.grad(direct, (mu, log_var))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("n_mc", [2, 10, 1000])
def test_gaussian_noise_statistics_have_the_exact_law(n_mc):
    """sqrt(M) a ~ N(0, 1) and M (b - a^2) ~ chi2(M - 1), independent: KS at 1% and near-zero correlation."""
    torch.manual_seed(6)
    a, b = Gaussian().noise_statistics(n_mc, (20000,))
    z = (a * math.sqrt(n_mc)).double().numpy()
    c = (n_mc * (b - a * a)).double().numpy()
    assert stats.kstest(z, "norm").pvalue > 0.01
    assert stats.kstest(c, "chi2", args=(n_mc - 1,)).pvalue > 0.01
    # correlation of z^2 and c: SE of a correlation ~ 1/sqrt(n) = 0.007, 4 SE
    assert abs(stats.pearsonr(z**2, c)[0]) < 4 / math.sqrt(len(z))


@pytest.mark.parametrize("chunk_size", [1, 2])  # 1: the one-draw-at-a-time path of large tensors
def test_radial_noise_statistics_have_the_right_moments(chunk_size):
    """E[a] = 0, E[b] = 1/d: per-element means over 400 independent (a, b) draws, within 4 SE."""
    torch.manual_seed(7)
    d, n = 50, 400
    draws = [Radial().noise_statistics(5, (d,), chunk_size=chunk_size) for _ in range(n)]
    a = torch.stack([x[0] for x in draws]).double()
    b = torch.stack([x[1] for x in draws]).double()
    assert torch.all(a.mean(0).abs() <= 4 * a.std(0) / math.sqrt(n))
    assert torch.all((b.mean(0) - 1 / d).abs() <= 4 * b.std(0) / math.sqrt(n))


def test_radial_entropy_constant():
    # d = 1: the radial noise is a standard normal
    assert radial_noise_entropy(1) == pytest.approx(0.5 * (1 + math.log(2 * math.pi)))
    # any d: h(xi) = E[-log f(xi)] with f(x) = 2 phi(|x|) / (S_{d-1} |x|^{d-1}); MC check within 4 SE
    torch.manual_seed(8)
    for d in (2, 3, 10):
        xi = Radial().sample_noise(200000, (d,)).double()
        rho = xi.norm(dim=1)
        log_s = math.log(2) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)
        log_f = math.log(2) - 0.5 * math.log(2 * math.pi) - 0.5 * rho**2 - log_s - (d - 1) * torch.log(rho)
        est, se = (-log_f).mean().item(), (-log_f).std().item() / math.sqrt(len(rho))
        assert abs(est - radial_noise_entropy(d)) <= 4 * se


def test_closed_form_gaussian_matches_textbook():
    mu, log_var = _params()
    scale = torch.exp(0.5 * log_var)
    m, s = 0.1, 0.7
    expected = (math.log(s) - torch.log(scale) + (scale**2 + (mu - m) ** 2) / (2 * s * s) - 0.5).sum()
    torch.testing.assert_close(closed_kl(Gaussian(), PRIOR, mu, scale), expected)


def test_closed_kl_is_zero_when_posterior_equals_prior():
    mu = torch.zeros(10)
    assert kl_divergence(Gaussian(), Normal(0.0, 1.0), mu, torch.ones(10), "closed").item() == pytest.approx(0, abs=1e-5)


def test_auto_picks_closed_form_and_repar_otherwise():
    from autobayes.kl import resolve_kl_method

    assert resolve_kl_method("auto", Gaussian(), PRIOR) == "closed"
    assert resolve_kl_method("auto", Radial(), PRIOR) == "closed"
    assert resolve_kl_method("auto", _UnitLaplace(), PRIOR) == "repar"


# --------------------------------------------------------------------------- a user-registered posterior
@register_posterior("test_unit_laplace")
class _UnitLaplace(Posterior):
    """Laplace noise with unit variance (scale 1/sqrt(2)): registered the way the README shows."""

    default_forward = "sample"
    _b = 1 / math.sqrt(2)

    def sample_noise(self, n, shape, *, device=None, dtype=None):
        u = torch.rand((n, *shape), device=device, dtype=dtype) - 0.5
        return -self._b * torch.sign(u) * torch.log1p(-2 * u.abs())

    def noise_entropy(self, numel):
        return numel * (1 + math.log(2 * self._b))

    def second_moment(self, numel):
        return 1.0


def test_registered_posterior_works_with_repar_and_direct():
    assert "test_unit_laplace" in POSTERIORS
    post = _UnitLaplace()
    repar = _draws(repar_kl, post, PRIOR, 10, n=1500, seed=9)
    direct = _draws(direct_kl, post, PRIOR, 10, n=1500, seed=10)
    assert stats.ks_2samp(repar.numpy(), direct.numpy()).pvalue > 0.01
    _assert_means_close(repar, direct, "laplace posterior")


def test_closed_without_a_closed_form_names_the_pair_and_the_fix():
    with pytest.raises(NoClosedFormError, match=r"_UnitLaplace posterior with the Normal prior.*kl='repar'"):
        closed_kl(_UnitLaplace(), PRIOR, torch.zeros(3), torch.ones(3))


def test_repar_memory_does_not_grow_with_n_mc():
    """The autograd graph of repar holds the same tensors at M = 1 and M = 10^4 (saved-tensor bytes)."""

    def saved_bytes(estimator, n_mc):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        mu, log_var = _params()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            estimator(Gaussian(), PRIOR, mu, torch.exp(0.5 * log_var), n_mc)
        return total

    assert saved_bytes(repar_kl, 1) == saved_bytes(repar_kl, 10000)
    assert saved_bytes(direct_kl, 1000) > 100 * saved_bytes(direct_kl, 1)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 4.5, 499.5, 5e5])
def test_standard_gamma_sampler_is_exact(alpha):
    from autobayes._random import standard_gamma

    torch.manual_seed(11)
    g = standard_gamma(alpha, (50000,)).double().numpy()
    assert stats.kstest(g, "gamma", args=(alpha,)).pvalue > 0.01


def _with_1_and_2_threads(draw, seed):
    """``[draw()]`` under 1 and under 2 intra-op threads, each after ``torch.manual_seed(seed)``."""
    threads = torch.get_num_threads()
    draws = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            torch.manual_seed(seed)
            draws.append(draw())
    finally:
        torch.set_num_threads(threads)
    return draws


def test_standard_gamma_parallel_streams_are_exact_and_independent_of_threads():
    from autobayes._random import PARALLEL_MIN_ELEMENTS, standard_gamma

    draws = _with_1_and_2_threads(lambda: standard_gamma(4.5, (2 * PARALLEL_MIN_ELEMENTS,)), seed=12)
    assert torch.equal(draws[0], draws[1])  # the streams depend on the seed, not on the thread count
    assert stats.kstest(draws[1][::4].double().numpy(), "gamma", args=(4.5,)).pvalue > 0.01


def test_parallel_normal_is_standard_normal_and_independent_of_threads():
    from autobayes._random import PARALLEL_MIN_ELEMENTS, randn

    draws = _with_1_and_2_threads(lambda: randn((2, PARALLEL_MIN_ELEMENTS)), seed=13)
    assert torch.equal(draws[0], draws[1])
    x = draws[0].flatten()
    assert stats.kstest(x[::8].double().numpy(), "norm").pvalue > 0.01
    # the parts are independent streams: neighbouring parts are uncorrelated (SE of a correlation ~ 1/sqrt(n))
    half = x.numel() // 8
    assert abs(stats.pearsonr(x[:half].numpy(), x[half:2 * half].numpy())[0]) < 4 / math.sqrt(half)


def test_radial_statistics_paths_agree_in_law():
    """The one-draw-at-a-time path (chunk 1) and the chunked path give the same law of the repar KL."""
    post = Radial()
    values = {}
    for chunk in (1, 8):
        mu, log_var = _params()
        torch.manual_seed(14)
        values[chunk] = torch.tensor(
            [repar_kl(post, PRIOR, mu, torch.exp(0.5 * log_var), 10, chunk_size=chunk).item() for _ in range(1500)],
            dtype=torch.float64,
        )
    assert stats.ks_2samp(values[1].numpy(), values[8].numpy()).pvalue > 0.01
    _assert_means_close(values[1], values[8], "radial chunk 1 vs 8")


def test_radial_one_draw_accumulators_agree():
    """The host-scalar (CPU) and device-scalar (GPU) updates of the one-draw-at-a-time path add the same sums."""
    from autobayes.posteriors.radial import _accumulate_device, _accumulate_host

    torch.manual_seed(15)
    eps, radii = torch.randn(6, 1000, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    host = torch.zeros(1000, dtype=torch.float64), torch.zeros(1000, dtype=torch.float64)
    device = torch.zeros(1000, dtype=torch.float64), torch.zeros(1000, dtype=torch.float64)
    for e, r in zip(eps, radii):
        _accumulate_host(*host, e.clone(), r.item())
        _accumulate_device(*device, e.clone(), r)
    xi = eps * (radii[:, None] / eps.norm(dim=1, keepdim=True))
    for got_host, got_device, want in zip(host, device, (xi.sum(0), (xi**2).sum(0))):
        torch.testing.assert_close(got_host, want)
        torch.testing.assert_close(got_device, want)
