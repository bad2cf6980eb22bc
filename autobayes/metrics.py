"""Evaluation metrics for predictive distributions: calibration, proper scores, OOD separation, regression.

Every function accepts torch tensors (any device) or numpy arrays / lists, computes in float64 numpy and returns
Python floats or small dataclasses of numpy arrays. Classification inputs are probabilities ``(N, C)`` (e.g. the
``mean`` of :func:`autobayes.uncertainty.classification_summary`) and integer labels ``(N,)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .checks import check_int
from .errors import ConfigError

__all__ = [
    "accuracy",
    "nll",
    "brier_score",
    "expected_calibration_error",
    "ReliabilityTable",
    "reliability_table",
    "auroc",
    "ConfidenceCurve",
    "confidence_curve",
    "gaussian_nll",
    "rmse",
    "r2_score",
    "interval_coverage",
    "as_float",
]


def accuracy(probs: Any, labels: Any) -> float:
    """Share of examples whose most probable class is the label.

    Example:
        >>> accuracy([[0.9, 0.1], [0.3, 0.7]], [0, 0])
        0.5
    """
    p, y = _probs_labels(probs, labels, "accuracy")
    return float(np.mean(p.argmax(axis=1) == y))


def nll(probs: Any, labels: Any, eps: Optional[float] = None) -> float:
    """Mean negative log-probability of the labels, ``-mean_i log p_i[y_i]`` (sklearn's ``log_loss``).

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` integer labels.
        eps: probabilities are clipped to ``[eps, 1 - eps]``; default the float64 machine epsilon (as sklearn).

    Example:
        >>> round(nll([[0.5, 0.5], [0.2, 0.8]], [0, 1]), 4)  # -(log 0.5 + log 0.8) / 2
        0.4581
    """
    p, y = _probs_labels(probs, labels, "nll")
    eps = np.finfo(np.float64).eps if eps is None else float(eps)
    picked = np.clip(p[np.arange(len(y)), y], eps, 1 - eps)
    return float(-np.mean(np.log(picked)))


def brier_score(probs: Any, labels: Any) -> float:
    """Brier score: mean over examples of the squared error of the probability vector.

    Multi-class (``probs`` of shape ``(N, C)``): ``mean_i sum_c (p_ic - [y_i = c])^2``, Brier's original
    definition, in ``[0, 2]`` (sklearn's ``brier_score_loss(..., scale_by_half=False)``). Binary (``probs`` of
    shape ``(N,)``, the probability of class 1): ``mean_i (p_i - y_i)^2``, in ``[0, 1]``, equal to sklearn's
    ``brier_score_loss``; note that the two-column form of the same prediction scores twice as much.

    Example:
        >>> brier_score([[1.0, 0.0], [0.5, 0.5]], [0, 1])  # (0 + 0.5) / 2
        0.25
        >>> brier_score([0.3, 0.6], [0, 1])  # (0.09 + 0.16) / 2
        0.125
    """
    p = as_float(probs)
    if p.ndim == 1:
        y = _as_labels(labels, len(p), "brier_score")
        if not np.isin(y, (0, 1)).all():
            raise ConfigError("brier_score: with 1-d probabilities (binary, P(class 1)) labels must be 0 or 1")
        return float(np.mean((p - y) ** 2))
    p, y = _probs_labels(probs, labels, "brier_score")
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


@dataclass
class ReliabilityTable:
    """Per-bin calibration statistics of the top-class confidence.

    Attributes:
        edges: ``(n_bins + 1,)`` bin edges on ``[0, 1]``; bin ``b`` is ``(edges[b], edges[b+1]]`` (the first
            also holds 0).
        counts: ``(n_bins,)`` number of examples per bin.
        confidence: ``(n_bins,)`` mean confidence (max probability) per bin, ``nan`` where empty.
        accuracy: ``(n_bins,)`` accuracy per bin, ``nan`` where empty.
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error, ``sum_b (n_b / N) |accuracy_b - confidence_b|``."""
        full = self.counts > 0
        weights = self.counts[full] / self.counts.sum()
        return float(np.sum(weights * np.abs(self.accuracy[full] - self.confidence[full])))


def reliability_table(probs: Any, labels: Any, n_bins: int = 15) -> ReliabilityTable:
    """Bin examples by confidence (their max probability) into ``n_bins`` equal-width bins.

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` integer labels.
        n_bins: number of bins, >= 1.

    Returns:
        :class:`ReliabilityTable` (edges, counts, mean confidence and accuracy per bin).

    Example:
        >>> t = reliability_table([[0.9, 0.1], [0.6, 0.4]], [0, 1], n_bins=2)
        >>> t.counts.tolist(), t.accuracy.tolist()
        ([0, 2], [nan, 0.5])
    """
    check_int(n_bins, "n_bins", 1, hint="e.g. n_bins=15")
    p, y = _probs_labels(probs, labels, "reliability_table")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], conf, side="left")  # right-closed bins (lo, hi]
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / counts
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / counts
    return ReliabilityTable(edges, counts, mean_conf, acc)


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Expected calibration error with ``n_bins`` equal-width confidence bins (Guo et al., 2017).

    ``ECE = sum_b (n_b / N) |accuracy_b - confidence_b|``; bins as in :func:`reliability_table`.

    Example:
        >>> round(expected_calibration_error([[0.9, 0.1], [0.6, 0.4]], [0, 1], n_bins=2), 4)  # |0.5 - 0.75|
        0.25
    """
    return reliability_table(probs, labels, n_bins).ece


def auroc(score_in: Any, score_out: Any) -> float:
    """Area under the ROC curve of an uncertainty score separating in- from out-of-distribution data.

    A higher score must mean "more likely out of distribution" (e.g. predictive entropy or mutual information).
    0.5 is chance, 1 perfect separation. Uses ``sklearn.metrics.roc_auc_score``.

    Args:
        score_in: scores of the in-distribution examples.
        score_out: scores of the out-of-distribution examples.

    Example:
        >>> auroc([0.1, 0.2], [0.3, 0.15])
        0.75
    """
    from sklearn.metrics import roc_auc_score

    s_in, s_out = as_float(score_in).ravel(), as_float(score_out).ravel()
    if len(s_in) == 0 or len(s_out) == 0:
        raise ConfigError(f"auroc needs scores of both sets, got {len(s_in)} in- and {len(s_out)} out-of-distribution")
    truth = np.concatenate([np.zeros(len(s_in)), np.ones(len(s_out))])
    return float(roc_auc_score(truth, np.concatenate([s_in, s_out])))


@dataclass
class ConfidenceCurve:
    """Accuracy and coverage of the confident predictions, per threshold.

    Attributes:
        thresholds: ``(T,)`` confidence thresholds.
        accuracy: ``(T,)`` accuracy of the examples with max probability ``>= t`` (``nan`` when there are none).
        coverage: ``(T,)`` share of examples with max probability ``>= t``.
        counts: ``(T,)`` number of such examples.
    """

    thresholds: np.ndarray
    accuracy: np.ndarray
    coverage: np.ndarray
    counts: np.ndarray


def confidence_curve(probs: Any, labels: Any, thresholds: Optional[Sequence[float]] = None) -> ConfidenceCurve:
    """For each threshold ``t``: accuracy of the predictions made with confidence ``>= t``, and their share.

    This is the paper's evaluation: a good uncertainty estimate keeps the accuracy of confident predictions
    high while refusing few examples.

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` integer labels.
        thresholds: confidence thresholds; default ``0, 0.05, ..., 1``.

    Example:
        >>> c = confidence_curve([[0.9, 0.1], [0.6, 0.4]], [0, 1], thresholds=[0.5, 0.8])
        >>> c.accuracy.tolist(), c.coverage.tolist()
        ([0.5, 1.0], [1.0, 0.5])
    """
    p, y = _probs_labels(probs, labels, "confidence_curve")
    t = np.linspace(0.0, 1.0, 21) if thresholds is None else as_float(thresholds).ravel()
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    mask = conf[None, :] >= t[:, None]
    counts = mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (mask & correct[None, :]).sum(axis=1) / counts
    return ConfidenceCurve(t, acc, counts / len(y), counts)


def gaussian_nll(mean: Any, var: Any, target: Any) -> float:
    """Mean Gaussian negative log-likelihood, ``mean 0.5 * (log(2 pi var) + (y - mean)^2 / var)``.

    Averaged over all entries (examples and output dimensions).

    Example:
        >>> round(gaussian_nll([0.0], [1.0], [0.0]), 4)  # 0.5 * log(2 pi)
        0.9189
    """
    m, v, y = _same_shape(mean, var, target, names=("mean", "var", "target"), fn="gaussian_nll")
    if np.any(v <= 0):
        raise ConfigError("gaussian_nll: var must be > 0 everywhere (pass variances, not log-variances)")
    return float(np.mean(0.5 * (np.log(2 * np.pi * v) + (y - m) ** 2 / v)))


def rmse(pred: Any, target: Any) -> float:
    """Root mean squared error over all entries.

    Example:
        >>> rmse([1.0, 2.0], [1.0, 4.0])  # sqrt((0 + 4) / 2)
        1.4142135623730951
    """
    p, y = _same_shape(pred, target, names=("pred", "target"), fn="rmse")
    return float(np.sqrt(np.mean((p - y) ** 2)))


def r2_score(pred: Any, target: Any) -> float:
    """Coefficient of determination, ``R^2 = 1 - SS_res / SS_tot``, pooled over the output dimensions.

    ``SS_res = sum (y - pred)^2`` and ``SS_tot = sum (y - mean_i y)^2``, the mean taken over the examples (the
    first dimension) for each output, and both sums over all entries: for one output sklearn's ``r2_score``, for
    several ``r2_score(..., multioutput="variance_weighted")``. 1 is a perfect fit, 0 the targets' mean; ``nan``
    when the targets are constant (``SS_tot = 0``).

    Example:
        >>> r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])  # 1 - 1 / (14/3)
        0.7857142857142857
    """
    p, y = _same_shape(pred, target, names=("pred", "target"), fn="r2_score")
    ss_res = float(np.sum((y - p) ** 2))
    ss_tot = float(np.sum((y - y.mean(axis=0)) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def interval_coverage(lower: Any, upper: Any, target: Any) -> float:
    """Share of targets inside their interval ``[lower, upper]`` (ideally the interval's nominal level).

    Example:
        >>> interval_coverage([0, 0], [1, 1], [0.5, 2.0])
        0.5
    """
    lo, hi, y = _same_shape(lower, upper, target, names=("lower", "upper", "target"), fn="interval_coverage")
    return float(np.mean((y >= lo) & (y <= hi)))


# ---------------------------------------------------------------------- input conversion
def _as_numpy(x: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return np.asarray(x)


def as_float(x: Any) -> np.ndarray:
    """``x`` (a tensor, on any device, an array or a nested list) as a float64 NumPy array, as every metric reads
    its inputs.

    Example:
        >>> as_float([[1, 2]])
        array([[1., 2.]])
    """
    return _as_numpy(x).astype(np.float64, copy=False)


def _as_labels(labels: Any, n: int, fn: str) -> np.ndarray:
    y = _as_numpy(labels)
    if y.ndim != 1 or len(y) != n:
        raise ConfigError(f"{fn}: labels must have shape ({n},) to match the probabilities, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ConfigError(f"{fn}: labels must be integer class indices, got dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


def _probs_labels(probs: Any, labels: Any, fn: str):
    p = as_float(probs)
    if p.ndim != 2:
        raise ConfigError(
            f"{fn}: probs must have shape (N, C), got {p.shape}; for Monte Carlo samples (S, N, C) pass their "
            f"mean, e.g. classification_summary(samples).mean"
        )
    if len(p) == 0:
        raise ConfigError(f"{fn}: got no examples")
    y = _as_labels(labels, len(p), fn)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ConfigError(f"{fn}: labels must lie in [0, {p.shape[1] - 1}] for {p.shape[1]} classes, got "
                          f"[{y.min()}, {y.max()}]")
    return p, y


def _same_shape(*arrays: Any, names: Sequence[str], fn: str):
    out = [as_float(a) for a in arrays]
    shapes = {n: a.shape for n, a in zip(names, out)}
    if len(set(shapes.values())) != 1:
        raise ConfigError(f"{fn}: inputs must have the same shape, got {shapes}")
    if out[0].size == 0:
        raise ConfigError(f"{fn}: got no values")
    return out
