"""Post-hoc calibration of a model's predictions on held-out data: temperature scaling and split conformal
prediction, each with a measured coverage.

Where things are: ``temperature.py`` (:func:`fit_temperature`, :class:`TemperatureScaler`: the NLL-optimal
temperature of the predictive, and why a Bayesian model's averaged predictive is scaled rather than each
sample), ``conformal.py`` (:func:`conformal_classifier` sets, :func:`conformal_regressor` intervals,
:class:`CoverageReport` with the exact finite-sample law of the coverage), ``inputs.py`` (what they read: a
summary of :func:`autobayes.predict`, probabilities, logits or Monte Carlo samples), ``record.py`` (save / load as
JSON).
"""

from .conformal import (
    ConformalClassifier,
    ConformalRegressor,
    CoverageReport,
    conformal_classifier,
    conformal_quantile,
    conformal_regressor,
    coverage_range,
)
from .temperature import TemperatureScaler, fit_temperature

__all__ = [
    "TemperatureScaler",
    "fit_temperature",
    "ConformalClassifier",
    "ConformalRegressor",
    "CoverageReport",
    "conformal_classifier",
    "conformal_regressor",
    "conformal_quantile",
    "coverage_range",
]
