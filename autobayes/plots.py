"""PNG plots of predictive uncertainty: reliability diagram, confidence curves, OOD histograms, regression bands,
predicted against true values and the coverage of regression intervals.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display needed), saved to
``path`` and closed. Each function returns ``path``.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ConfigError
from .metrics import as_float, confidence_curve, interval_coverage, reliability_table

__all__ = [
    "plot_reliability_diagram",
    "plot_confidence_curve",
    "plot_uncertainty_histogram",
    "plot_regression_band",
    "plot_predicted_vs_true",
    "plot_interval_coverage",
]

PathLike = Union[str, os.PathLike]


def plot_reliability_diagram(probs: Any, labels: Any, path: PathLike, n_bins: int = 15,
                             title: str = "Reliability diagram") -> PathLike:
    """Accuracy against confidence per bin (bars), the diagonal of perfect calibration, and the ECE; below it,
    a panel with the number of examples in each bin (bars, each labelled with its count), so that a bin's
    accuracy can be weighed by how many examples it rests on.

    Args:
        probs: ``(N, C)`` predictive probabilities.
        labels: ``(N,)`` integer labels.
        path: output PNG file.
        n_bins: number of equal-width confidence bins.
        title: figure title (the ECE is appended).

    Returns:
        ``path``.

    Example:
        >>> plot_reliability_diagram(summary.mean, summary.targets, "runs/reliability.png")  # doctest: +SKIP
    """
    table = reliability_table(probs, labels, n_bins)
    fig, (ax, ax_counts) = _figure(rows=2, height_ratios=(3, 1), size=(6, 6))
    width = np.diff(table.edges)
    acc = np.nan_to_num(table.accuracy)
    ax.bar(table.edges[:-1], acc, width=width, align="edge", color="tab:blue", edgecolor="black", alpha=0.8,
           label="accuracy")
    conf = np.where(table.counts > 0, table.confidence, np.nan)
    ax.plot(table.edges[:-1] + width / 2, conf, "o", color="tab:red", markersize=4, label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{title} (ECE = {table.ece:.3f})")
    ax.legend(loc="upper left", framealpha=0.95, fontsize="small")
    bars = ax_counts.bar(table.edges[:-1], table.counts, width=width, align="edge", color="tab:gray",
                         edgecolor="black", label="examples per bin")
    ax_counts.bar_label(bars, labels=[str(int(c)) if c else "" for c in table.counts], fontsize="x-small",
                        padding=1)
    ax_counts.set(xlim=(0, 1), ylim=(0, 1.25 * max(1, int(table.counts.max()))),
                  xlabel="confidence (max probability)", ylabel=f"examples (N={int(table.counts.sum())})")
    return _save(fig, path)


def plot_confidence_curve(probs: Any, labels: Any, path: PathLike, thresholds: Optional[Sequence[float]] = None,
                          title: str = "Accuracy of confident predictions") -> PathLike:
    """Accuracy of the predictions with confidence ``>= t`` and the share of such data, against ``t``.

    Args:
        probs: ``(N, C)`` predictive probabilities.
        labels: ``(N,)`` integer labels.
        path: output PNG file.
        thresholds: confidence thresholds (default ``0, 0.05, ..., 1``).
        title: figure title.

    Returns:
        ``path``.

    Example:
        >>> plot_confidence_curve(summary.mean, summary.targets, "runs/confidence.png")  # doctest: +SKIP
    """
    curve = confidence_curve(probs, labels, thresholds)
    fig, ax = _figure()
    ax.plot(curve.thresholds, curve.accuracy, "o-", color="tab:blue", label="accuracy (confidence >= t)")
    ax.plot(curve.thresholds, curve.coverage, "s--", color="tab:orange", label="share of data (coverage)")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence threshold t", ylabel="accuracy / share", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _save(fig, path)


def plot_uncertainty_histogram(score_in: Any, score_out: Any, path: PathLike,
                               labels: Tuple[str, str] = ("in-distribution", "out-of-distribution"),
                               score_name: str = "predictive entropy", bins: int = 30,
                               title: Optional[str] = None) -> PathLike:
    """Overlaid density histograms of an uncertainty score on two sets, with their AUROC in the title.

    Args:
        score_in: scores of the in-distribution examples.
        score_out: scores of the out-of-distribution examples (higher = more uncertain).
        path: output PNG file.
        labels: legend names of the two sets.
        score_name: x-axis label.
        bins: number of histogram bins (shared by both sets).
        title: figure title (default: ``"<score_name>: AUROC = ..."``).

    Returns:
        ``path``.

    Example:
        >>> plot_uncertainty_histogram(s_mnist.predictive_entropy, s_fashion.predictive_entropy,
        ...                            "runs/ood.png")  # doctest: +SKIP
    """
    from .metrics import auroc

    s_in, s_out = as_float(score_in).ravel(), as_float(score_out).ravel()
    if len(s_in) == 0 or len(s_out) == 0:
        raise ConfigError("plot_uncertainty_histogram needs scores of both sets")
    edges = np.histogram_bin_edges(np.concatenate([s_in, s_out]), bins=bins)
    fig, ax = _figure()
    ax.hist(s_in, bins=edges, density=True, alpha=0.6, color="tab:blue", label=f"{labels[0]} (n={len(s_in)})")
    ax.hist(s_out, bins=edges, density=True, alpha=0.6, color="tab:red", label=f"{labels[1]} (n={len(s_out)})")
    ax.set(xlabel=score_name, ylabel="density",
           title=title or f"{score_name}: AUROC = {auroc(s_in, s_out):.3f}")
    ax.legend(loc="upper right")
    return _save(fig, path)


def plot_regression_band(x: Any, mean: Any, lower: Any, upper: Any, path: PathLike,
                         x_train: Any = None, y_train: Any = None, y_true: Any = None,
                         title: str = "Predictive mean and interval", band_label: str = "95% interval") -> PathLike:
    """1-d regression: predictive mean with a shaded interval, optionally the training points and the truth.

    Args:
        x: ``(N,)`` inputs (sorted here).
        mean: ``(N,)`` predictive means.
        lower: ``(N,)`` lower interval ends.
        upper: ``(N,)`` upper interval ends.
        path: output PNG file.
        x_train: optional training inputs, drawn as points with ``y_train``.
        y_train: optional training targets.
        y_true: optional ``(N,)`` true function values at ``x``, drawn as a dashed line.
        title: figure title.
        band_label: legend label of the band.

    Returns:
        ``path``.

    Example:
        >>> s = regression_summary(samples)                                          # doctest: +SKIP
        >>> plot_regression_band(x, s.mean, s.lower, s.upper, "runs/band.png", x_train, y_train)  # doctest: +SKIP
    """
    arrays = [as_float(a).ravel() for a in (x, mean, lower, upper)]
    if len({len(a) for a in arrays}) != 1:
        raise ConfigError(f"plot_regression_band: x, mean, lower, upper must have the same length, got "
                          f"{[len(a) for a in arrays]} (1-d regression only)")
    order = np.argsort(arrays[0])
    xs, m, lo, hi = (a[order] for a in arrays)
    fig, ax = _figure()
    ax.fill_between(xs, lo, hi, color="tab:blue", alpha=0.25, label=band_label)
    ax.plot(xs, m, color="tab:blue", label="predictive mean")
    if y_true is not None:
        ax.plot(xs, as_float(y_true).ravel()[order], "--", color="black", label="truth")
    if x_train is not None and y_train is not None:
        ax.plot(as_float(x_train).ravel(), as_float(y_train).ravel(), "o", color="tab:red", markersize=3,
                alpha=0.7, label="training data")
    ax.set(xlabel="x", ylabel="y", title=title)
    ax.legend(loc="best")
    return _save(fig, path)


def plot_predicted_vs_true(target: Any, mean: Any, lower: Any, upper: Any, path: PathLike, level: float = 0.95,
                           title: str = "Predicted against true values") -> PathLike:
    """Regression of any input dimension: each example's predictive mean against its true target, with its
    predictive interval as a vertical bar, and the diagonal of perfect prediction; the title gives the share of
    targets inside their interval (:func:`autobayes.metrics.interval_coverage`) against the nominal level.

    Args:
        target: true targets (any shape; every entry is one point).
        mean: predictive means, the same shape.
        lower: lower interval ends, the same shape.
        upper: upper interval ends, the same shape.
        path: output PNG file.
        level: the intervals' nominal level, for the title.
        title: figure title (the coverage is appended).

    Returns:
        ``path``.

    Example:
        >>> plot_predicted_vs_true(y, s.mean, s.lower, s.upper, "runs/predicted_vs_true.png")  # doctest: +SKIP
    """
    y, m, lo, hi = (as_float(a).ravel() for a in (target, mean, lower, upper))
    if not len(y) == len(m) == len(lo) == len(hi) or len(y) == 0:
        raise ConfigError(f"plot_predicted_vs_true: target, mean, lower, upper must be non-empty and of one size, "
                          f"got {[len(a) for a in (y, m, lo, hi)]}")
    coverage = interval_coverage(lo, hi, y)
    fig, ax = _figure(size=(5.5, 5.5))
    inside = (y >= lo) & (y <= hi)
    for mask, color, label in ((inside, "tab:blue", "interval holds the target"),
                               (~inside, "tab:red", "interval misses the target")):
        if mask.any():
            ax.errorbar(y[mask], m[mask], yerr=np.stack([m[mask] - lo[mask], hi[mask] - m[mask]]), fmt="o",
                        markersize=3, color=color, ecolor=color, elinewidth=0.8, alpha=0.6, label=label)
    ends = [float(min(y.min(), lo.min())), float(max(y.max(), hi.max()))]
    ax.plot(ends, ends, "--", color="gray", label="perfect prediction")
    ax.set(xlabel="true value", ylabel=f"predictive mean and {level:.0%} interval",
           title=f"{title}\n{level:.0%} intervals hold {coverage:.1%} of the targets")
    ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def plot_interval_coverage(target: Any, mean: Any, std: Any, path: PathLike,
                           levels: Optional[Sequence[float]] = None,
                           title: str = "Calibration of the predictive intervals") -> PathLike:
    """Regression calibration: for each nominal level, the share of targets inside the central normal interval
    ``mean +- z * std`` of that level, against the level; a calibrated predictive lies on the diagonal, an
    overconfident one below it.

    Args:
        target: true targets (any shape).
        mean: predictive means, the same shape.
        std: predictive standard deviations (> 0), the same shape.
        path: output PNG file.
        levels: nominal levels in (0, 1) (default ``0.05, 0.10, ..., 0.95`` and ``0.99``).
        title: figure title.

    Returns:
        ``path``.

    Example:
        >>> plot_interval_coverage(y, s.mean, s.std, "runs/interval_coverage.png")  # doctest: +SKIP
    """
    from statistics import NormalDist

    y, m, sd = (as_float(a).ravel() for a in (target, mean, std))
    if not len(y) == len(m) == len(sd) or len(y) == 0:
        raise ConfigError(f"plot_interval_coverage: target, mean, std must be non-empty and of one size, got "
                          f"{[len(a) for a in (y, m, sd)]}")
    nominal = np.asarray(levels if levels is not None else [*np.arange(0.05, 0.951, 0.05), 0.99], dtype=np.float64)
    if not np.all((nominal > 0) & (nominal < 1)):
        raise ConfigError(f"plot_interval_coverage: levels must lie in (0, 1), got {nominal.tolist()}")
    observed = [interval_coverage(m - z * sd, m + z * sd, y)
                for z in (NormalDist().inv_cdf(0.5 + q / 2) for q in nominal)]
    fig, ax = _figure(size=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(nominal, observed, "o-", color="tab:blue", label=f"observed (N={len(y)})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="nominal level of the central interval",
           ylabel="share of targets inside", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return _save(fig, path)


def _figure(rows: int = 1, height_ratios: Optional[Sequence[float]] = None, size: Tuple[float, float] = (6, 4.5)):
    """A figure on the Agg canvas and its axes: one, or ``rows`` stacked with a shared x axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)  # the Agg canvas, whatever pyplot's backend; no global pyplot state
    if rows == 1:
        return fig, fig.add_subplot(1, 1, 1)
    axes = fig.subplots(rows, 1, sharex=True, gridspec_kw={"height_ratios": height_ratios})
    return fig, tuple(axes)


def _save(fig, path: PathLike) -> PathLike:
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
