import numpy as np
import pytest
import torch

from autobayes import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as fh:
        head = fh.read(8)
    return head == PNG_SIGNATURE and path.stat().st_size > 1000


@pytest.fixture
def classification():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.where(rng.uniform(size=300) < 0.7, probs.argmax(1), rng.integers(0, 5, size=300))
    return probs, labels


def test_reliability_diagram(tmp_path, classification):
    path = plots.plot_reliability_diagram(*classification, tmp_path / "reliability.png", n_bins=10)
    assert _is_png(path)


def test_confidence_curve_plot(tmp_path, classification):
    probs, labels = classification
    path = plots.plot_confidence_curve(torch.tensor(probs), torch.tensor(labels), tmp_path / "conf.png")
    assert _is_png(path)


def test_uncertainty_histogram(tmp_path):
    rng = np.random.default_rng(1)
    path = plots.plot_uncertainty_histogram(rng.gamma(2, 0.2, 500), rng.gamma(4, 0.3, 400),
                                            tmp_path / "nested" / "ood.png")
    assert _is_png(path)


def test_regression_band(tmp_path):
    x = np.linspace(-3, 3, 100)
    mean = np.sin(x)
    std = 0.1 + 0.2 * np.abs(x)
    xt = np.random.default_rng(2).uniform(-2, 2, 30)
    path = plots.plot_regression_band(x, mean, mean - 2 * std, mean + 2 * std, tmp_path / "band.png",
                                      x_train=xt, y_train=np.sin(xt), y_true=np.sin(x))
    assert _is_png(path)
