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


def test_reliability_diagram_shows_the_examples_per_bin(tmp_path, classification, monkeypatch):
    """A bin's accuracy means little without its size: a second panel draws the counts, each bar labelled."""
    from autobayes.metrics import reliability_table

    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    plots.plot_reliability_diagram(*classification, tmp_path / "reliability.png", n_bins=10)
    counts = reliability_table(*classification, 10).counts
    (fig,) = figures
    assert len(fig.axes) == 2
    panel = fig.axes[1]
    np.testing.assert_array_equal([bar.get_height() for bar in panel.patches], counts)
    labels = [text.get_text() for text in panel.texts]
    assert labels == [str(int(c)) if c else "" for c in counts] and sum(map(int, filter(None, labels))) == 300


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
