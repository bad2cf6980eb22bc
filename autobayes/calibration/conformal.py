"""Split conformal prediction (Vovk et al., 2005; Lei et al., 2018): a score ``s(x, y)`` of how badly ``y`` fits
the prediction at ``x``, computed on ``n`` held-out calibration examples; the threshold ``q`` is their ``k``-th
smallest score, ``k = ceil((n + 1)(1 - alpha))``; a new example's set is every ``y`` with ``s(x, y) <= q``.

For exchangeable data the set holds the truth with probability ``k / (n + 1) >= 1 - alpha`` (exactly that, below
``1 - alpha + 1/(n + 1)``, when scores do not tie; more when they do), whatever the model. Given the calibration set, the coverage is random: it follows
``Beta(k, n + 1 - k)``, and the share of ``m`` test examples covered follows a beta-binomial law
(:func:`coverage_range`), which says how far a measured coverage may fall from ``k / (n + 1)`` by chance.
When ``k > n`` (too few calibration examples for ``alpha``) the threshold is infinite: every class, an infinite
interval.

Scores: classification ``"lac"``: ``1 - p_y`` (Sadinle et al., 2019: the smallest sets on average), or ``"aps"``:
the probability of the classes ranked above ``y`` plus ``u p_y`` (Romano et al., 2020, ``u`` uniform when
``randomized``, else 1: sets that adapt to how hard the example is); regression ``"absolute"``: ``|y - mean|``,
intervals ``mean -/+ q``, or ``"normalised"``: ``|y - mean| / std``, intervals ``mean -/+ q std`` (wider where
the model is less sure).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .. import metrics
from ..checks import check_between, check_int
from ..errors import ConfigError
from .inputs import class_labels, predictive_probs, regression_inputs
from .record import JsonRecord

__all__ = ["conformal_quantile", "coverage_range", "CoverageReport", "ConformalClassifier", "ConformalRegressor",
           "conformal_classifier", "conformal_regressor", "CLASSIFICATION_SCORES", "REGRESSION_SCORES"]

CLASSIFICATION_SCORES = ("lac", "aps")
REGRESSION_SCORES = ("absolute", "normalised")


def conformal_quantile(scores: Any, alpha: float) -> float:
    """The ``ceil((n + 1)(1 - alpha))``-th smallest of ``n`` calibration scores (``inf`` when that exceeds ``n``).

    Example:
        >>> conformal_quantile([0.1, 0.4, 0.2, 0.3], alpha=0.4)  # k = ceil(5 * 0.6) = 3
        0.3
    """
    alpha = check_between(alpha, "alpha", 0, 1, hint="the miscoverage, e.g. alpha=0.1 for 90% sets")
    s = metrics.as_float(scores).ravel()
    if s.size == 0:
        raise ConfigError("conformal_quantile: got no calibration scores")
    k = _rank(s.size, alpha)
    if k > s.size:
        warnings.warn(
            f"conformal: {s.size} calibration examples are too few for alpha={alpha:g} (ceil((n + 1)(1 - alpha)) = "
            f"{k} > n): the sets hold every class, the intervals are infinite; calibrate on at least "
            f"{math.ceil(1 / alpha) - 1} examples",
            stacklevel=2,
        )
        return float("inf")
    return float(torch.as_tensor(s).kthvalue(k).values)


def _rank(n: int, alpha: float) -> int:
    return math.ceil(round((n + 1) * (1 - alpha), 9))  # round: (n + 1)(1 - alpha) integral up to float error


def coverage_range(n_calibration: int, alpha: float, n_test: int, level: float = 0.99) -> Tuple[float, float]:
    """The central ``level`` range of the share of ``n_test`` examples that split conformal sets from
    ``n_calibration`` examples cover: ``BetaBinomial(n_test, k, n_calibration + 1 - k) / n_test`` (exact when
    scores do not tie), ``k = ceil((n_calibration + 1)(1 - alpha))``.

    Example:
        >>> lo, hi = coverage_range(500, 0.1, 1000)
        >>> round(lo, 3), round(hi, 3)
        (0.854, 0.939)
    """
    from scipy.special import betaln, gammaln  # scipy comes with scikit-learn

    n, m = check_int(n_calibration, "n_calibration", 1), check_int(n_test, "n_test", 1)
    level = check_between(level, "level", 0, 1)
    k = _rank(n, check_between(alpha, "alpha", 0, 1))
    if k > n:
        return 1.0, 1.0
    x, a, b = np.arange(m + 1), k, n + 1 - k  # the beta-binomial pmf, in logs
    log_pmf = gammaln(m + 1) - gammaln(x + 1) - gammaln(m - x + 1) + betaln(x + a, m - x + b) - betaln(a, b)
    cdf = np.cumsum(np.exp(log_pmf))
    lo, hi = np.searchsorted(cdf, [(1 - level) / 2, (1 + level) / 2], side="left").clip(0, m)
    return float(lo) / m, float(hi) / m


@dataclass(frozen=True)
class CoverageReport:
    """Coverage of conformal sets or intervals on test data.

    Attributes:
        coverage: the share of test examples whose label (target) is in its set (interval).
        mean_size: the mean set size (classes) or interval width (the targets' units).
        n_examples: the number of test examples.
        nominal: ``1 - alpha``.
        expected: ``k / (n + 1)``, the mean coverage over calibration sets (``>= nominal``).
        low: ``high``: the central 99% range of ``coverage`` by chance (:func:`coverage_range`).
        empty: the share of empty sets (classification: when ``alpha`` exceeds the error rate, the sets of the
            hardest examples are empty; always 0 for intervals).
    """

    coverage: float
    mean_size: float
    n_examples: int
    nominal: float
    expected: float
    low: float
    high: float
    empty: float = 0.0

    @property
    def within_sampling_error(self) -> bool:
        """Whether ``coverage`` lies in the 99% range ``[low, high]`` of its exact law."""
        return self.low <= self.coverage <= self.high


def _report(covered: Tensor, sizes: Tensor, alpha: float, n_calibration: int, empty: float = 0.0) -> CoverageReport:
    m = int(covered.numel())
    k = _rank(n_calibration, alpha)
    low, high = coverage_range(n_calibration, alpha, m)
    return CoverageReport(float(covered.double().mean()), float(sizes.double().mean()), m, 1 - alpha,
                          min(1.0, k / (n_calibration + 1)), low, high, empty)


# ---------------------------------------------------------------------- classification
@dataclass(frozen=True)
class ConformalClassifier(JsonRecord):
    """Prediction sets of a classifier: ``{y : score(x, y) <= threshold}``.

    Attributes:
        threshold: ``q``, the calibration scores' ``k``-th smallest (``inf``: every class).
        alpha: the miscoverage; sets hold the label with probability ``>= 1 - alpha``.
        score: ``"lac"`` or ``"aps"`` (see the module doc).
        n_calibration: ``n``.
        randomized: APS only: the uniform ``u`` (exact coverage; sets may be empty) or ``u = 1`` (conservative).
        logits: whether it takes logits by default.

    Example:
        >>> cp = ConformalClassifier(threshold=0.7, alpha=0.1, score="lac", n_calibration=100)
        >>> cp.predict_sets(torch.tensor([[0.6, 0.35, 0.05]])).tolist()  # classes with p >= 0.3
        [[True, True, False]]
    """

    threshold: float
    alpha: float
    score: str
    n_calibration: int
    randomized: bool = True
    logits: bool = False

    def __post_init__(self) -> None:
        if self.score not in CLASSIFICATION_SCORES:
            raise ConfigError(f"conformal classification score must be one of {CLASSIFICATION_SCORES}, got "
                              f"{self.score!r}; e.g. score='lac'")

    def predict_sets(self, predictions: Any, *, logits: Optional[bool] = None, seed: Optional[int] = None) -> Tensor:
        """``(N, C)`` boolean: whether each class is in each example's set (``predictions`` as
        :func:`conformal_classifier` takes them; ``seed`` fixes APS's randomisation)."""
        p = predictive_probs(predictions, self.logits if logits is None else logits, "predict_sets")
        return _class_scores(p, self.score, self.randomized, seed) <= self.threshold

    def evaluate(self, predictions: Any, labels: Any = None, *, logits: Optional[bool] = None,
                 seed: Optional[int] = None) -> CoverageReport:
        """Coverage and mean set size on test data (``labels``: default a summary's ``targets``)."""
        sets = self.predict_sets(predictions, logits=logits, seed=seed)
        y = class_labels(labels, predictions, tuple(sets.shape), "evaluate")
        sizes = sets.sum(1)
        return _report(sets[torch.arange(len(y)), y], sizes, self.alpha, self.n_calibration,
                       float((sizes == 0).double().mean()))


def conformal_classifier(predictions: Any, labels: Any = None, *, alpha: float = 0.1, score: str = "lac",
                         randomized: bool = True, logits: bool = False,
                         seed: Optional[int] = None) -> ConformalClassifier:
    """Calibrate conformal prediction sets on held-out predictions.

    Args:
        predictions: a :class:`~autobayes.uncertainty.ClassificationSummary` (its ``mean``; its ``targets`` are the
            labels when ``labels`` is None), ``(N, C)`` probabilities, or logits with ``logits=True``; ``(S, N, C)``
            Monte Carlo samples are averaged.
        labels: ``(N,)`` integer labels.
        alpha: the miscoverage, in ``(0, 1)``: sets of coverage ``1 - alpha``.
        score: ``"lac"`` (``1 - p_y``) or ``"aps"``.
        randomized: APS only, see :class:`ConformalClassifier`.
        logits: ``predictions`` are logits.
        seed: fixes APS's randomisation.

    Returns:
        :class:`ConformalClassifier`.

    Example:
        >>> cp = autobayes.conformal_classifier(calibration_summary, alpha=0.1)  # doctest: +SKIP
        >>> sets = cp.predict_sets(test_summary)                                 # doctest: +SKIP
        >>> cp.evaluate(test_summary).coverage                                   # doctest: +SKIP
        0.9055
    """
    alpha = check_between(alpha, "alpha", 0, 1, hint="the miscoverage, e.g. alpha=0.1 for 90% sets")
    if score not in CLASSIFICATION_SCORES:
        raise ConfigError(f"score must be one of {CLASSIFICATION_SCORES}, got {score!r}; e.g. score='lac'")
    p = predictive_probs(predictions, logits, "conformal_classifier")
    y = class_labels(labels, predictions, tuple(p.shape), "conformal_classifier")
    scores = _class_scores(p, score, randomized, seed)[torch.arange(len(y)), y]
    return ConformalClassifier(conformal_quantile(scores, alpha), alpha, score, len(y), bool(randomized), logits)


def _class_scores(p: Tensor, score: str, randomized: bool, seed: Optional[int]) -> Tensor:
    """``(N, C)`` scores of every class: ``1 - p_c`` (lac), or the mass ranked above ``c`` plus ``u p_c`` (aps)."""
    if score == "lac":
        return 1 - p
    order = p.argsort(dim=1, descending=True, stable=True)
    ranked = p.gather(1, order)
    above = torch.empty_like(p).scatter_(1, order, ranked.cumsum(1) - ranked)
    if not randomized:
        return above + p
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    u = torch.rand(p.shape[0], 1, generator=gen, dtype=p.dtype)
    return above + u * p


# ---------------------------------------------------------------------- regression
@dataclass(frozen=True)
class ConformalRegressor(JsonRecord):
    """Prediction intervals of a regressor: ``mean -/+ threshold`` (``"absolute"``) or ``mean -/+ threshold * std``
    (``"normalised"``).

    Example:
        >>> cr = ConformalRegressor(threshold=2.0, alpha=0.1, score="normalised", n_calibration=100)
        >>> [t.tolist() for t in cr.predict_intervals(torch.tensor([1.0]), std=torch.tensor([0.5]))]
        [[0.0], [2.0]]
    """

    threshold: float
    alpha: float
    score: str
    n_calibration: int

    def __post_init__(self) -> None:
        if self.score not in REGRESSION_SCORES:
            raise ConfigError(f"conformal regression score must be one of {REGRESSION_SCORES}, got {self.score!r}")

    def predict_intervals(self, predictions: Any, std: Any = None) -> Tuple[Tensor, Tensor]:
        """``(lower, upper)`` float64 of the shape of the predictions (a ``RegressionSummary`` gives its ``mean``
        and ``std``)."""
        mean, _, sd = regression_inputs(predictions, None, std, "predict_intervals")
        half = self.threshold * _scale(sd, self.score, "predict_intervals")
        return mean - half, mean + half

    def evaluate(self, predictions: Any, targets: Any = None, std: Any = None) -> CoverageReport:
        """Coverage and mean interval width on test data (``targets``: default a summary's ``targets``)."""
        _, y, _ = regression_inputs(predictions, targets, None, "evaluate")
        if y is None:
            raise ConfigError("evaluate: pass the targets, e.g. cr.evaluate(mean, targets, std)")
        lower, upper = self.predict_intervals(predictions, std)
        return _report((y >= lower) & (y <= upper), upper - lower, self.alpha, self.n_calibration)


def conformal_regressor(predictions: Any, targets: Any = None, std: Any = None, *, alpha: float = 0.1,
                        score: Optional[str] = None) -> ConformalRegressor:
    """Calibrate conformal prediction intervals on held-out predictions.

    Args:
        predictions: the predictive mean ``(N[, D])``, or a :class:`~autobayes.uncertainty.RegressionSummary` (its
            ``mean``, ``std`` and ``targets``); several outputs are pooled (one threshold for all).
        targets: the targets, of the predictions' shape.
        std: the predictive standard deviation (``> 0``), for the normalised score.
        alpha: the miscoverage, in ``(0, 1)``.
        score: ``"normalised"`` (the default when a std is given) or ``"absolute"``.

    Returns:
        :class:`ConformalRegressor`.

    Example:
        >>> cr = autobayes.conformal_regressor(calibration_summary, alpha=0.1)  # doctest: +SKIP
        >>> lower, upper = cr.predict_intervals(test_summary)                    # doctest: +SKIP
    """
    alpha = check_between(alpha, "alpha", 0, 1, hint="the miscoverage, e.g. alpha=0.1 for 90% intervals")
    mean, y, sd = regression_inputs(predictions, targets, std, "conformal_regressor")
    score = score or ("normalised" if sd is not None else "absolute")
    if score not in REGRESSION_SCORES:
        raise ConfigError(f"score must be one of {REGRESSION_SCORES}, got {score!r}")
    if y is None:
        raise ConfigError("conformal_regressor: pass the targets, e.g. conformal_regressor(mean, targets, std)")
    residual = (y - mean).abs() / _scale(sd, score, "conformal_regressor")
    return ConformalRegressor(conformal_quantile(residual, alpha), alpha, score, int(residual.numel()))


def _scale(std: Optional[Tensor], score: str, fn: str) -> Any:
    if score == "absolute":
        return 1.0
    if std is None:
        raise ConfigError(f"{fn}: the normalised score needs the predictive std (std=...), or use score='absolute'")
    return std
