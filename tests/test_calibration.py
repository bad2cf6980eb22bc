"""Temperature scaling and split conformal prediction (autobayes.calibration), tested as statistics.

Conformal: with ``n`` calibration and ``m`` test examples and ``k = ceil((n + 1)(1 - alpha))``, the number of test
examples covered follows ``BetaBinomial(m, k, n + 1 - k)`` exactly when scores do not tie (the coverage given the
calibration set is ``Beta(k, n + 1 - k)``; Vovk 2012, Angelopoulos & Bates 2021, section 3). The synthetic tests
draw ``R`` independent calibration / test sets and compare the counts with that law by a chi-square test
(p > 1e-3: a correct implementation fails with probability 1e-3 over seeds; the seed is fixed), and the mean
coverage with ``k / (n + 1)`` within 4 standard errors of the mean (the law's own variance over R). n = 20 makes
an off-by-one in ``k`` (``ceil(n (1 - alpha))``) a shift of 1 / 21 = 0.048, about 30 standard errors.

Temperature: the MLE of ``beta = 1 / T`` has asymptotic variance ``1 / (N I)``, with the Fisher information of one
example ``I = Var_{y ~ softmax(beta z)}[z_y]`` (the logits' variance under the model), so ``sd(T) = T^2 / sqrt(N I)``
by the delta method; the recovered temperature must lie within 4 of these, and its spread over 20 seeds must
match it within 40% (the sample sd of 20 draws has a relative sd of about 16%).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

import autobayes
from autobayes.calibration import (ConformalClassifier, ConformalRegressor, TemperatureScaler, conformal_classifier,
                                   conformal_quantile, conformal_regressor, coverage_range, fit_temperature)
from autobayes.cli import main
from autobayes.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------- conformal: the quantile and its law
def test_conformal_quantile_is_the_finite_sample_rank():
    scores = torch.arange(1.0, 11.0)  # 1..10, shuffled
    scores = scores[torch.randperm(10, generator=torch.Generator().manual_seed(0))]
    assert conformal_quantile(scores, 0.1) == 10.0   # k = ceil(11 * 0.9) = 10
    assert conformal_quantile(scores, 0.2) == 9.0    # k = ceil(8.8) = 9, where np.quantile(., 0.8) gives 8.2
    assert conformal_quantile(scores, 0.5) == 6.0    # k = ceil(5.5) = 6
    assert conformal_quantile(torch.ones(19), 0.1) == 1.0  # k = ceil(18.0) = 18 (no rounding up to 19)
    with pytest.warns(UserWarning, match="at least 19 examples"):
        assert conformal_quantile(scores, 0.05) == math.inf  # k = ceil(10.45) = 11 > 10: every class
    with pytest.warns(UserWarning, match="too few for alpha=0.1"):
        cp = conformal_classifier(torch.full((5, 3), 1 / 3), torch.zeros(5, dtype=torch.long), alpha=0.1)
    assert cp.threshold == math.inf and bool(cp.predict_sets(torch.eye(3)).all())
    lo, hi = coverage_range(500, 0.1, 1000)
    law = stats.betabinom(1000, 451, 50)
    assert (lo, hi) == (law.ppf(0.005) / 1000, law.ppf(0.995) / 1000)


def _check_law(counts: np.ndarray, n: int, m: int, alpha: float) -> None:
    """Counts of covered test examples over independent repetitions against BetaBinomial(m, k, n + 1 - k)."""
    k = math.ceil((n + 1) * (1 - alpha))
    law = stats.betabinom(m, k, n + 1 - k)
    r = len(counts)
    se = math.sqrt(law.var() / r) / m
    assert abs(counts.mean() / m - k / (n + 1)) < 4 * se, (counts.mean() / m, k / (n + 1), se)
    # chi-square goodness of fit, bins of expected count >= 5 (tails merged)
    expected = law.pmf(np.arange(m + 1)) * r
    edges, acc = [], 0.0
    for c in range(m + 1):
        acc += expected[c]
        if acc >= 5 and expected[c + 1:].sum() >= 5:
            edges.append(c)
            acc = 0.0
    bins = np.searchsorted(np.array(edges), np.arange(m + 1), side="left")
    obs = np.bincount(bins[counts], minlength=bins.max() + 1)
    exp = np.bincount(bins, weights=expected, minlength=bins.max() + 1)
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3


@pytest.mark.parametrize("score", ["lac", "aps"])
def test_conformal_sets_follow_the_exact_coverage_law(score):
    """Synthetic 4-class data, labels drawn from softmax(z); the model is miscalibrated (softmax(1.5 z)): the
    coverage law holds whatever the model. APS is randomised, so its scores never tie."""
    gen = torch.Generator().manual_seed(1)
    r, n, m, c, alpha = 600, 20, 40, 4, 0.1
    z = 2.0 * torch.randn(r, n + m, c, generator=gen, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, -1).reshape(-1, c), 1, generator=gen).reshape(r, n + m)
    model = torch.softmax(1.5 * z, -1)
    counts, sizes = [], []
    for i in range(r):
        cp = conformal_classifier(model[i, :n], y[i, :n], alpha=alpha, score=score, seed=2 * i)
        rep = cp.evaluate(model[i, n:], y[i, n:], seed=2 * i + 1)
        counts.append(round(rep.coverage * m))
        sizes.append(rep.mean_size)
    _check_law(np.array(counts), n, m, alpha)
    assert 1.0 < np.mean(sizes) < c  # informative sets


@pytest.mark.parametrize("score", ["normalised", "absolute"])
def test_conformal_intervals_follow_the_exact_coverage_law(score):
    """Heteroscedastic synthetic regression y = mu + sigma * t_5 noise; the model's std is off by 30%."""
    gen = torch.Generator().manual_seed(2)
    r, n, m, alpha = 600, 20, 40, 0.1
    mu = torch.randn(r, n + m, generator=gen, dtype=torch.float64)
    sigma = torch.exp(0.5 * torch.randn(r, n + m, generator=gen, dtype=torch.float64))
    noise = torch.distributions.StudentT(5.0).sample((r, n + m)).double()
    y = mu + sigma * noise
    counts, widths = [], []
    for i in range(r):
        cr = conformal_regressor(mu[i, :n], y[i, :n], 1.3 * sigma[i, :n], alpha=alpha, score=score)
        rep = cr.evaluate(mu[i, n:], y[i, n:], 1.3 * sigma[i, n:])
        counts.append(round(rep.coverage * m))
        widths.append(rep.mean_size)
    _check_law(np.array(counts), n, m, alpha)
    lower, upper = cr.predict_intervals(mu[0, :3], 1.3 * sigma[0, :3])
    half = cr.threshold * (1.3 * sigma[0, :3] if score == "normalised" else torch.ones(3, dtype=torch.float64))
    assert torch.allclose(upper - lower, 2 * half) and torch.allclose(lower + half, mu[0, :3])


# ---------------------------------------------------------------------- temperature
def _overconfident(seed: int, n: int = 2000, c: int = 10, t0: float = 2.5):
    """Logits z ~ N(0, 3^2); labels drawn from softmax(z / t0): the logits z are over-confident by t0."""
    gen = torch.Generator().manual_seed(seed)
    z = 3.0 * torch.randn(n, c, generator=gen, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z / t0, -1), 1, generator=gen).squeeze(1)
    return z, y


def _fisher_sd(z: torch.Tensor, t: float) -> float:
    """Asymptotic sd of the temperature MLE: T^2 / sqrt(N I), I = mean_i Var_{softmax(z_i / T)}[z_i]."""
    p = torch.softmax(z / t, -1)
    var = (p * z ** 2).sum(-1) - (p * z).sum(-1) ** 2
    return t ** 2 / math.sqrt(float(var.sum()))


def test_temperature_recovers_a_known_temperature_with_the_mle_spread():
    t0 = 2.5
    fits = [fit_temperature(*_overconfident(seed), logits=True).temperature for seed in range(20)]
    sd = _fisher_sd(_overconfident(0)[0], t0)  # 0.064 for N = 2000 (measured spread over the 20 seeds: 0.064)
    assert abs(fits[0] - t0) < 4 * sd
    assert abs(np.mean(fits) - t0) < 4 * sd / math.sqrt(20)
    assert 0.6 * sd < np.std(fits, ddof=1) < 1.4 * sd
    z, y = _overconfident(0)
    from_probs = fit_temperature(torch.softmax(z, -1), y)  # the same predictive given as probabilities
    assert from_probs.temperature == pytest.approx(fits[0], rel=1e-6)


def test_temperature_lowers_held_out_nll_and_never_changes_the_argmax():
    z, y = _overconfident(5, n=4000)
    scaler = fit_temperature(z[:2000], y[:2000], logits=True)
    before = autobayes.nll(torch.softmax(z[2000:], -1), y[2000:])
    after = autobayes.nll(scaler(z[2000:]), y[2000:])
    assert scaler.nll_after < scaler.nll_before and after < before - 0.1  # 2.3 -> 1.5 nats here
    # argmax kept for Monte Carlo samples (the average is scaled) at any temperature, ties included
    gen = torch.Generator().manual_seed(6)
    samples = torch.softmax(4 * torch.randn(30, 500, 7, generator=gen), -1)
    samples[:, :5] = 1 / 7  # exact ties
    for t in (0.01, 0.3, 1.0, 7.0, 100.0):
        calibrated = TemperatureScaler(t)(samples)
        assert torch.equal(calibrated.argmax(-1), samples.double().mean(0).argmax(-1))
        assert torch.allclose(calibrated.sum(-1), torch.ones(500, dtype=torch.float64))


def test_calibrators_save_and_load(tmp_path):
    items = [TemperatureScaler(1.7, logits=True, n_examples=9, nll_before=0.5, nll_after=0.4),
             ConformalClassifier(0.8, 0.1, "aps", 50, randomized=False),
             ConformalClassifier(math.inf, 0.01, "lac", 50),
             ConformalRegressor(1.6, 0.1, "normalised", 40)]
    for i, item in enumerate(items):
        path = item.save(tmp_path / f"{i}.json")
        assert type(item).load(path) == item
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    with pytest.raises(autobayes.OutputExistsError):
        items[0].save(tmp_path / "0.json")
    with pytest.raises(ConfigError, match="holds a TemperatureScaler"):
        ConformalRegressor.load(tmp_path / "0.json")
    with pytest.raises(ConfigError, match="logits=True"):
        fit_temperature(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="std must be > 0"):
        conformal_regressor(torch.zeros(3), torch.zeros(3), torch.zeros(3))


# ---------------------------------------------------------------------- digits: a trained network
@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "run"
    autobayes.train("digits_cnn", "digits", epochs=2, seed=0, out_dir=out, progress=False, n_test=5)
    ckpt = out / "best.safetensors"
    _, val, _ = autobayes.load_dataset("digits")
    bnn = autobayes.load(ckpt)
    torch.manual_seed(0)  # as evaluate --seed 0 draws, after loading
    summary = autobayes.predict(bnn, torch.utils.data.DataLoader(val, batch_size=256), n_samples=20, progress=False)
    return ckpt, summary


def test_conformal_coverage_and_temperature_on_digits(digits):
    """360 validation digits, five random 180 / 180 splits: coverage within the 99.9% range of its law (the law of
    independent test examples; drawing them from a finite pool only narrows it), and temperature scaling of an
    over-confident version of the network (probabilities cubed) lowers the held-out NLL, accuracy unchanged."""
    _, s = digits
    p, y = s.mean.double(), s.targets
    sharp = p ** 3 / (p ** 3).sum(-1, keepdim=True)
    for seed in range(5):
        perm = torch.randperm(360, generator=torch.Generator().manual_seed(seed))
        cal, test = perm[:180], perm[180:]
        for score, alpha in (("lac", 0.05), ("aps", 0.1), ("lac", 0.2)):
            cp = conformal_classifier(p[cal], y[cal], alpha=alpha, score=score, seed=seed)
            rep = cp.evaluate(p[test], y[test], seed=seed)
            lo, hi = coverage_range(180, alpha, 180, level=0.999)
            assert lo <= rep.coverage <= hi, (score, alpha, rep)
        scaler = fit_temperature(sharp[cal], y[cal])
        assert scaler.temperature > 1.5
        assert autobayes.nll(scaler(sharp[test]), y[test]) < autobayes.nll(sharp[test], y[test])
        assert autobayes.accuracy(scaler(sharp[test]), y[test]) == autobayes.accuracy(sharp[test], y[test])


def test_evaluate_calibrate_and_conformal_flags(digits, tmp_path, capsys):
    from autobayes.data.sklearn_sets import split_indices

    ckpt, s = digits
    out = tmp_path / "ev"
    argv = ["evaluate", str(ckpt), "--out", str(out), "--n-samples", "20", "--calibrate", "0.4", "--conformal", "0.1"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "temperature scaling, fitted on 144 examples, tested on 216" in table and "coverage" in table
    m = json.loads((out / "metrics.json").read_text())
    cal, conf = m["calibration"], m["conformal"]
    assert m["accuracy"] == pytest.approx(autobayes.accuracy(s.mean, s.targets))  # the whole set, as before
    # the same split and fit by hand: evaluate draws the same predictions (seed 0, one batch)
    y = s.targets
    test_idx, cal_idx = split_indices(len(y), y.numpy(), 0.4, 0)
    assert np.bincount(y[cal_idx], minlength=10).min() >= 14  # stratified: 40% of each class (each has >= 35)
    scaler = fit_temperature(s.mean[cal_idx], y[cal_idx])
    assert cal["temperature"] == pytest.approx(scaler.temperature, rel=1e-4)
    assert cal["nll_after"] == pytest.approx(autobayes.nll(scaler(s.mean[test_idx]), y[test_idx]), rel=1e-4)
    assert cal["accuracy"] == pytest.approx(autobayes.accuracy(s.mean[test_idx], y[test_idx]))
    assert (cal["n_calibration"], cal["n_test"], conf["n_calibration"], conf["n_test"]) == (144, 216, 144, 216)
    lo, hi = conf["coverage_99_range"]
    assert conf["nominal_coverage"] == 0.9 and conf["expected_coverage"] == math.ceil(145 * 0.9) / 145
    assert lo <= conf["coverage"] <= hi and conf["mean_set_size"] > 0
    quick = argv[:2] + ["--n-samples", "2", "--out", str(tmp_path / "x")]
    assert main(quick + ["--conformal", "0.1", "--conformal-score", "absolute"]) == 2
    assert "regression score" in capsys.readouterr().err
    assert main(quick + ["--calibrate", "1.5"]) == 2
    assert "--calibrate must be" in capsys.readouterr().err


def test_evaluate_conformal_intervals_of_a_regression_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    autobayes.train("fcnet", "diabetes", epochs=2, seed=0, out_dir=out, progress=False, n_test=5)
    ckpt = str(out / "best.safetensors")
    assert main(["evaluate", ckpt, "--out", str(tmp_path / "ev"), "--n-samples", "10", "--conformal", "0.2"]) == 0
    conf = json.loads((tmp_path / "ev" / "metrics.json").read_text())["conformal"]
    assert conf["score"] == "normalised" and conf["n_calibration"] + conf["n_test"] == 89
    lo, hi = conf["coverage_99_range"]
    assert lo <= conf["coverage"] <= hi and conf["mean_width"] > 0
    assert "mean interval width" in capsys.readouterr().out
    assert main(["evaluate", ckpt, "--out", str(tmp_path / "e2"), "--calibrate", "0.5"]) == 2
    assert "--conformal ALPHA" in capsys.readouterr().err
