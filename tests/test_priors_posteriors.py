"""The Laplace, Student-t and scale-mixture priors, the Laplace and logistic posteriors, and every pair's KL.

Statistical comparisons follow tests/test_kl.py: fixed seeds, tolerances from the standard error (SE) of the
quantities compared. Means within 4 combined SE (two-sided, ~6e-5 false-alarm rate per comparison); standard
deviations through ``log(s_1 / s_2)``, whose SE is ``sqrt((k_1 - 1) / 4n + (k_2 - 1) / 4n)`` with ``k`` each
sample's kurtosis (the delta method; exact for any law with a finite fourth moment as n grows), within 4 SE;
two-sample Kolmogorov-Smirnov tests at the 1% level.
"""

from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from autobayes import BayesConfig, bayesify
from autobayes.errors import ConfigError
from autobayes.kl import closed_kl, direct_kl, has_closed_form, repar_kl, resolve_kl_method
from autobayes.posteriors import Gaussian, Laplace, Logistic, Radial
from autobayes.priors import PRIORS, LaplacePrior, Normal, ScaleMixture, StudentT

SHAPE = (3, 4)
N_DRAWS = 1000

POSTERIORS = {"gaussian": Gaussian(), "radial": Radial(), "laplace": Laplace(), "logistic": Logistic()}
# sigma2 = 0.1 (not Blundell's e^-6) so that both components of the mixture shape the estimates at these scales
PRIORS_ = {
    "normal": Normal(torch.tensor(0.1), 0.7),
    "laplace": LaplacePrior(torch.tensor(0.1), 0.5),
    "student_t": StudentT(torch.tensor(0.1), 0.5, df=3.0),
    "scale_mixture": ScaleMixture(torch.tensor(0.0), 1.0, pi=0.5, sigma2=0.1),
}
# tests/test_kl.py covers gaussian/normal and radial/normal
NEW_PAIRS = [(q, p) for q in POSTERIORS for p in PRIORS_ if not (q in ("gaussian", "radial") and p == "normal")]
CLOSED = {("gaussian", "normal"), ("radial", "normal"), ("laplace", "normal"), ("logistic", "normal"),
          ("gaussian", "laplace"), ("laplace", "laplace"), ("logistic", "laplace")}


pytestmark = pytest.mark.usefixtures("one_thread")


def _params(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = (0.5 * torch.randn(SHAPE, generator=g)).requires_grad_(True)
    log_var = torch.empty(SHAPE).uniform_(-3, -1, generator=g).requires_grad_(True)
    return mu, log_var


def _draws(estimator, posterior, prior, n_mc, seed, n=N_DRAWS, **kw):
    """n independent estimates with their gradients w.r.t. mu and log_var (float64)."""
    mu, log_var = _params()
    torch.manual_seed(seed)
    values, g_mu, g_lv = [], [], []
    for _ in range(n):
        kl = estimator(posterior, prior, mu, torch.exp(0.5 * log_var), n_mc, **kw)
        gm, gl = torch.autograd.grad(kl, (mu, log_var))
        values.append(kl.item())
        g_mu.append(gm)
        g_lv.append(gl)
    return torch.tensor(values, dtype=torch.float64), torch.stack(g_mu).double(), torch.stack(g_lv).double()


def _se_of_mean(x: torch.Tensor) -> torch.Tensor:
    return x.std(0) / math.sqrt(x.shape[0])


def _kurtosis(x: torch.Tensor) -> float:
    c = x - x.mean()
    return (c**4).mean().item() / (c**2).mean().item() ** 2


# --------------------------------------------------------------------------- every pair: repar vs direct (vs closed)
@pytest.mark.parametrize("post,prior", NEW_PAIRS, ids=[f"{q}-{p}" for q, p in NEW_PAIRS])
def test_repar_and_direct_agree_in_law_and_expected_gradient(post, prior):
    posterior, p = POSTERIORS[post], PRIORS_[prior]
    # n_mc = 10 in chunks of 3: the surrogate's accumulation over several chunks is exercised
    rv, rg_mu, rg_lv = _draws(repar_kl, posterior, p, 10, seed=1, chunk_size=3)
    dv, dg_mu, dg_lv = _draws(direct_kl, posterior, p, 10, seed=2)
    assert stats.ks_2samp(rv.numpy(), dv.numpy()).pvalue > 0.01
    se = math.sqrt(_se_of_mean(rv).item() ** 2 + _se_of_mean(dv).item() ** 2)
    assert abs(rv.mean().item() - dv.mean().item()) <= 4 * se
    se_log_sd = math.sqrt((_kurtosis(rv) - 1 + _kurtosis(dv) - 1) / (4 * N_DRAWS))
    assert abs(math.log(rv.std().item() / dv.std().item())) <= 4 * se_log_sd
    for r, d in ((rg_mu, dg_mu), (rg_lv, dg_lv)):  # element-wise, 4 combined SE (plus a float32 rounding floor)
        assert torch.all((r.mean(0) - d.mean(0)).abs() <= 4 * torch.sqrt(_se_of_mean(r) ** 2 + _se_of_mean(d) ** 2) + 1e-6)
    assert has_closed_form(posterior, p) == ((post, prior) in CLOSED)
    if (post, prior) in CLOSED:  # both are unbiased for the closed form, value and gradient
        mu, log_var = _params()
        kl = closed_kl(posterior, p, mu, torch.exp(0.5 * log_var))
        c_mu, c_lv = (g.double() for g in torch.autograd.grad(kl, (mu, log_var)))
        for v in (rv, dv):
            assert abs(v.mean().item() - kl.item()) <= 4 * _se_of_mean(v).item()
        for r, c in ((rg_mu, c_mu), (rg_lv, c_lv), (dg_mu, c_mu), (dg_lv, c_lv)):
            assert torch.all((r.mean(0) - c).abs() <= 4 * _se_of_mean(r) + 1e-6)


@pytest.mark.parametrize("post,prior", NEW_PAIRS, ids=[f"{q}-{p}" for q, p in NEW_PAIRS])
def test_repar_and_direct_agree_in_law_at_one_sample(post, prior):
    """M = 1, where the estimates are least Gaussian: KS at 1% on the values."""
    posterior, p = POSTERIORS[post], PRIORS_[prior]
    mu, log_var = _params()
    scale = torch.exp(0.5 * log_var).detach()
    torch.manual_seed(3)
    repar = [repar_kl(posterior, p, mu.detach(), scale, 1).item() for _ in range(N_DRAWS)]
    direct = [direct_kl(posterior, p, mu.detach(), scale, 1).item() for _ in range(N_DRAWS)]
    assert stats.ks_2samp(repar, direct).pvalue > 0.01


@pytest.mark.parametrize(
    "post,prior",
    [pair for pair in NEW_PAIRS if pair[1] != "normal"] + [("laplace", "normal"), ("logistic", "normal")],
)
def test_repar_equals_direct_given_the_same_noise(post, prior):
    """With one chunk (M <= chunk_size) both estimators draw the same noise from the same seed: the surrogate's
    value and first derivatives are then the M-sample estimator's, to float32 rounding."""
    posterior, p = POSTERIORS[post], PRIORS_[prior]
    mu, log_var = _params()
    out = []
    for estimator in (repar_kl, direct_kl):
        torch.manual_seed(4)
        kl = estimator(posterior, p, mu, torch.exp(0.5 * log_var), 7)
        out.append((kl, *torch.autograd.grad(kl, (mu, log_var))))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class _Held:
    """What the saved-tensor hook stores in the graph: alive exactly as long as the graph keeps it."""

    def __init__(self, t):
        self.t = t


def test_surrogate_graph_does_not_grow_with_n_mc():
    """Bytes saved in the autograd graph still alive once the estimate is returned (the graph the backward pass
    will use; the surrogate's per-chunk graphs are freed as it goes), scale-mixture prior: the same at M = 1 and
    M = 1000, while the direct estimator's graph grows with M."""

    def live_saved_bytes(estimator, n_mc):
        held = []

        def pack(t):
            h = _Held(t)
            held.append((weakref.ref(h), t.numel() * t.element_size()))
            return h

        mu, log_var = _params()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda h: h.t):
            kl = estimator(Laplace(), PRIORS_["scale_mixture"], mu, torch.exp(0.5 * log_var), n_mc)
        gc.collect()
        alive = sum(nbytes for ref, nbytes in held if ref() is not None)
        del kl
        return alive

    assert live_saved_bytes(repar_kl, 1) == live_saved_bytes(repar_kl, 1000) > 0
    assert live_saved_bytes(direct_kl, 1000) > 100 * live_saved_bytes(direct_kl, 1)


# --------------------------------------------------------------------------- closed forms
_SCIPY_POSTERIOR = {"gaussian": stats.norm, "laplace": stats.laplace, "logistic": stats.logistic}
_SCIPY_PRIOR = {"normal": stats.norm(0.1, 0.7), "laplace": stats.laplace(0.1, 0.5)}


@pytest.mark.parametrize("post,prior", sorted(pair for pair in CLOSED if pair[0] != "radial"))
def test_closed_forms_match_numerical_integration(post, prior):
    """KL = sum_j E_q[-log p(w_j)] - H(q_j), each term by scipy (quadrature and the family's entropy)."""
    mu, log_var = _params()
    scale = torch.exp(0.5 * log_var)
    ours = closed_kl(POSTERIORS[post], PRIORS_[prior], mu, scale).item()
    p = _SCIPY_PRIOR[prior]
    ref = 0.0
    for m, s in zip(mu.detach().double().flatten().tolist(), scale.detach().double().flatten().tolist()):
        q = _SCIPY_POSTERIOR[post](m, s)
        # beyond 60 scales every posterior here has mass < e^-60: the bounds cost nothing; points: the kinks
        cross, _ = integrate.quad(lambda w: -p.logpdf(w) * q.pdf(w), m - 60 * s, m + 60 * s, points=[m, 0.1],
                                  epsabs=1e-12, epsrel=1e-10, limit=200)
        ref += cross - q.entropy()
    assert ours == pytest.approx(ref, rel=1e-5, abs=1e-5)


def test_auto_uses_the_closed_forms_and_repar_elsewhere():
    for q in POSTERIORS:
        for p in PRIORS_:
            expected = "closed" if (q, p) in CLOSED else "repar"
            assert resolve_kl_method("auto", POSTERIORS[q], PRIORS_[p]) == expected, (q, p)


# --------------------------------------------------------------------------- posteriors
@pytest.mark.parametrize("post,law", [("laplace", "laplace"), ("logistic", "logistic")])
def test_posterior_noise_law_entropy_and_second_moment(post, law):
    torch.manual_seed(5)
    posterior = POSTERIORS[post]
    xi = posterior.sample_noise(4, (5000,)).double().flatten().numpy()
    assert np.all(np.isfinite(xi))
    assert stats.kstest(xi, law).pvalue > 0.01
    ref = getattr(stats, law)
    assert posterior.noise_entropy(3) == pytest.approx(3 * ref.entropy())
    assert posterior.second_moment(3) == pytest.approx(ref.var())
    assert posterior.default_forward == "sample"


def test_posterior_noise_is_finite_at_the_edges_of_the_uniform_draws():
    """float16 draws hit the ends of the uniform grid often: the noise must stay finite."""
    torch.manual_seed(6)
    for posterior in (Laplace(), Logistic()):
        xi = posterior.sample_noise(200, (1000,), dtype=torch.float16)
        assert torch.isfinite(xi).all()


# --------------------------------------------------------------------------- priors
def test_prior_log_densities_match_scipy():
    w = torch.tensor([-30.0, -2.0, -0.3, 0.0, 0.1, 0.7, 3.0, 30.0], dtype=torch.float64)
    cases = [
        (LaplacePrior(torch.tensor(0.1), 0.5), stats.laplace(0.1, 0.5).logpdf),
        (StudentT(torch.tensor(0.1), 0.5, df=3.0), stats.t(3.0, 0.1, 0.5).logpdf),
        (StudentT(torch.tensor(0.0), 2.0, df=0.5), stats.t(0.5, 0.0, 2.0).logpdf),
        (
            ScaleMixture(torch.tensor(0.2), 1.0, pi=0.25, sigma2=math.exp(-6)),
            lambda x: np.logaddexp(np.log(0.25) + stats.norm(0.2, 1.0).logpdf(x),
                                   np.log(0.75) + stats.norm(0.2, math.exp(-6)).logpdf(x)),
        ),
    ]
    for prior, ref in cases:
        ours = prior.double().log_prob(w).numpy()
        # the buffers were built in float32 (0.1 is not exact there): 1e-7 absolute and relative
        np.testing.assert_allclose(ours, ref(w.numpy()), rtol=1e-7, atol=1e-7, err_msg=repr(prior))


def test_scale_mixture_is_stable_and_defaults_to_blundell():
    p = ScaleMixture(torch.tensor(0.0), 1.0)  # pi = 1/2, sigma1 = prior_scale = 1, sigma2 = e^-6
    assert float(p.pi) == 0.5 and float(p.sigma1) == 1.0 and float(p.sigma2) == pytest.approx(math.exp(-6))
    w = torch.tensor([0.0, 1e-4, 1.0, 100.0, 1e4], requires_grad=True)
    lp = p.log_prob(w)
    (g,) = torch.autograd.grad(lp.sum(), w)
    assert torch.isfinite(lp).all() and torch.isfinite(g).all()
    # far from 0 the narrow component underflows; the log-density is the wide one's (+ log pi)
    assert lp[3].item() == pytest.approx(math.log(0.5) - 0.5 * math.log(2 * math.pi) - 5000.0, rel=1e-6)


def test_prior_options_are_validated_with_a_fix():
    with pytest.raises(ConfigError, match=r"no option 'df'.*\['pi', 'sigma2'\]"):
        PRIORS.get("scale_mixture").from_config(torch.tensor(0.0), 1.0, df=3)
    with pytest.raises(ConfigError, match="prior_scale"):
        PRIORS.get("scale_mixture").from_config(torch.tensor(0.0), 1.0, sigma1=1.0)
    with pytest.raises(ConfigError, match=r"pi .* must be in \(0, 1\)"):
        ScaleMixture(torch.tensor(0.0), 1.0, pi=1.0)
    with pytest.raises(ConfigError, match="df must be"):
        StudentT(torch.tensor(0.0), 1.0, df=-1.0)
    with pytest.raises(ConfigError, match="takes none"):
        PRIORS.get("laplace").from_config(torch.tensor(0.0), 1.0, df=3)


def test_priors_are_configurable_per_layer_and_saved_in_the_state_dict():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    config = BayesConfig(
        posterior="laplace", prior="scale_mixture", prior_scale=0.5, prior_kwargs={"pi": 0.25, "sigma2": 0.01},
        overrides={"2": {"prior": "student_t", "prior_kwargs": {"df": 5.0}}},
    )
    bnn = bayesify(model, config)
    priors = {n: m for n, m in bnn.named_modules() if n.endswith(".prior")}
    kinds = {n: type(m) for n, m in priors.items()}
    assert {k for n, k in kinds.items() if n.startswith("0.")} == {ScaleMixture}
    assert {k for n, k in kinds.items() if n.startswith("2.")} == {StudentT}
    state = bnn.state_dict()
    assert any(k.endswith("prior.pi") for k in state) and any(k.endswith("prior.df") for k in state)
    fresh = bayesify(model, BayesConfig(posterior="laplace", prior="scale_mixture", overrides=config.overrides))
    fresh.load_state_dict(state)
    for n, m in fresh.named_modules():
        if n.endswith(".prior") and isinstance(m, ScaleMixture):
            assert float(m.pi) == 0.25 and float(m.sigma2) == pytest.approx(0.01) and float(m.scale) == 0.5
    out, kl = bnn(torch.randn(3, 4))
    assert out.shape == (3, 2) and torch.isfinite(kl)


# --------------------------------------------------------------------------- training
@pytest.mark.slow
def test_digits_trains_with_the_scale_mixture_prior():
    """Three epochs on digits with Blundell's prior (pi = 1/2, sigma1 = 1, sigma2 = e^-6; M = 10 to stay quick):
    ~0.93 validation accuracy (seed 0); the floor 0.85 leaves room for platform differences. The full default run
    (`autobayes train --prior scale_mixture`, 30 epochs, M = 100) reaches ~0.98."""
    from autobayes.training import train

    result = train("digits_cnn", "digits", epochs=3, n_test=5, progress=False, seed=0, prior="scale_mixture", n_mc=10)
    assert result.final["val_acc"] >= 0.85
    assert math.isfinite(result.final["train_kl"])


@pytest.mark.parametrize("name", ["radial", "gaussian", "laplace", "logistic"])
def test_sample_weights_is_mu_plus_scale_times_the_noise_law(name):
    """sample_weights (the Radial's fused draw included) is mu + scale * xi with xi from sample_noise: from the
    same random state it gives the same numbers (up to float rounding), and its gradient in scale is xi."""
    posterior = POSTERIORS[name]
    mu, scale = torch.randn(7, 5, dtype=torch.float64), torch.rand(7, 5, dtype=torch.float64).requires_grad_()
    torch.manual_seed(9)
    w = posterior.sample_weights(mu, scale)
    torch.manual_seed(9)
    xi = posterior.sample_noise(1, (7, 5), dtype=torch.float64)[0]
    torch.testing.assert_close(w, mu + scale * xi)
    w.sum().backward()
    torch.testing.assert_close(scale.grad, xi)
