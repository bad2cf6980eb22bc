import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from autobayes import metrics
from autobayes.errors import ConfigError


def _random_probs(n=200, c=5, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c), size=n)
    y = rng.integers(0, c, size=n)
    return p, y


def test_nll_equals_sklearn_log_loss():
    p, y = _random_probs()
    assert metrics.nll(p, y) == pytest.approx(log_loss(y, p, labels=list(range(5))), rel=1e-10)
    assert metrics.nll(torch.tensor(p), torch.tensor(y)) == pytest.approx(metrics.nll(p, y), rel=1e-12)


def test_brier_binary_equals_sklearn_and_multiclass_convention():
    rng = np.random.default_rng(1)
    p1 = rng.uniform(size=100)
    y = rng.integers(0, 2, size=100)
    assert metrics.brier_score(p1, y) == pytest.approx(brier_score_loss(y, p1), rel=1e-12)
    # Documented: the two-column form sums over both classes, twice the binary score.
    two = np.stack([1 - p1, p1], axis=1)
    assert metrics.brier_score(two, y) == pytest.approx(2 * brier_score_loss(y, p1), rel=1e-12)
    p, yc = _random_probs()
    expected = brier_score_loss(yc, p, labels=list(range(5)), scale_by_half=False)
    assert metrics.brier_score(p, yc) == pytest.approx(expected, rel=1e-12)


def test_auroc_equals_sklearn():
    rng = np.random.default_rng(2)
    s_in, s_out = rng.normal(size=50), rng.normal(0.7, size=70)
    truth = np.r_[np.zeros(50), np.ones(70)]
    assert metrics.auroc(torch.tensor(s_in), s_out) == pytest.approx(roc_auc_score(truth, np.r_[s_in, s_out]))


def test_accuracy():
    p, y = _random_probs()
    assert metrics.accuracy(p, y) == pytest.approx(np.mean(p.argmax(1) == y))


def test_ece_hand_computed():
    # 4 bins of width 0.25. Confidences 0.9, 0.8 (bin 3), 0.6 (bin 2), 0.4 (bin 1).
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.3, 0.1], [0.4, 0.35, 0.25]])
    labels = np.array([0, 0, 0, 1])  # correct, wrong, correct, wrong
    table = metrics.reliability_table(probs, labels, n_bins=4)
    np.testing.assert_array_equal(table.counts, [0, 1, 1, 2])
    np.testing.assert_allclose(table.confidence[1:], [0.4, 0.6, 0.85])
    np.testing.assert_allclose(table.accuracy[1:], [0.0, 1.0, 0.5])
    assert np.isnan(table.accuracy[0])
    # ECE = 1/4 * |0 - 0.4| + 1/4 * |1 - 0.6| + 2/4 * |0.5 - 0.85| = 0.1 + 0.1 + 0.175
    assert metrics.expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(0.375)


def test_ece_bins_are_right_closed():
    probs = np.array([[0.5, 0.5], [0.75, 0.25]])
    table = metrics.reliability_table(probs, [0, 0], n_bins=4)
    np.testing.assert_array_equal(table.counts, [0, 1, 1, 0])  # 0.5 in (0.25, 0.5], 0.75 in (0.5, 0.75]


def test_confidence_curve():
    probs = np.array([[0.95, 0.05], [0.7, 0.3], [0.55, 0.45], [0.2, 0.8]])
    labels = np.array([0, 1, 0, 1])
    c = metrics.confidence_curve(probs, labels, thresholds=[0.5, 0.6, 0.9, 0.99])
    np.testing.assert_allclose(c.coverage, [1.0, 0.75, 0.25, 0.0])
    np.testing.assert_allclose(c.accuracy[:3], [0.75, 2 / 3, 1.0])
    assert np.isnan(c.accuracy[3])


def test_regression_metrics():
    from scipy.stats import norm

    rng = np.random.default_rng(3)
    m, v, y = rng.normal(size=40), rng.uniform(0.5, 2, size=40), rng.normal(size=40)
    assert metrics.gaussian_nll(m, v, y) == pytest.approx(-norm.logpdf(y, m, np.sqrt(v)).mean())
    assert metrics.rmse(torch.tensor(m), y) == pytest.approx(np.sqrt(np.mean((m - y) ** 2)))
    assert metrics.interval_coverage([0, 0, 0], [1, 1, 1], [0.0, 1.0, 1.5]) == pytest.approx(2 / 3)


def test_r2_equals_sklearn():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    y = rng.normal(size=(50, 3)) * [1.0, 5.0, 0.2]
    pred = y + rng.normal(size=(50, 3))
    assert metrics.r2_score(torch.tensor(pred), y) == pytest.approx(r2_score(y, pred, multioutput="variance_weighted"))
    assert metrics.r2_score(pred[:, 0], y[:, 0]) == pytest.approx(r2_score(y[:, 0], pred[:, 0]))
    assert metrics.r2_score(pred[:, :1], y[:, :1]) == pytest.approx(r2_score(y[:, 0], pred[:, 0]))
    assert metrics.r2_score(y, y) == 1.0
    assert np.isnan(metrics.r2_score([1.0, 2.0], [3.0, 3.0]))  # constant targets: undefined, not sklearn's 0 / 1


def test_errors():
    with pytest.raises(ConfigError, match=r"\(N, C\)"):
        metrics.accuracy(np.ones((2, 3, 4)), [0, 1])
    with pytest.raises(ConfigError, match="labels must lie"):
        metrics.nll([[0.5, 0.5]], [2])
    with pytest.raises(ConfigError, match="n_bins"):
        metrics.reliability_table([[0.5, 0.5]], [0], n_bins=0)
    with pytest.raises(ConfigError, match="same shape"):
        metrics.rmse([1.0, 2.0], [1.0])
    with pytest.raises(ConfigError, match="log-variances"):
        metrics.gaussian_nll([0.0], [-1.0], [0.0])
