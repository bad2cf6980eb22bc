"""The regression predictive of a checkpoint in its targets' units, and the likelihood noise it records: shared by
``autobayes predict`` and ``autobayes evaluate``."""

from __future__ import annotations

from statistics import NormalDist
from typing import Any, Dict, Optional, Tuple

__all__ = ["regression_predictive", "NO_NOISE_WARNING", "likelihood_noise_known", "check_noise_variance",
           "is_heteroscedastic"]


def regression_predictive(summary, spec: Dict[str, Any], scaling: Optional[Tuple[float, float]],
                          noise_variance: Optional[float] = None) -> Dict[str, Any]:
    """The regression predictive of ``summary`` (a :class:`autobayes.uncertainty.RegressionSummary` of the network's
    outputs) in the targets' original units.

    Args:
        summary: the Monte Carlo summary of the network's outputs (standardised targets).
        spec: the checkpoint's header (``bnn.autobayes_checkpoint``): its ``metadata["likelihood"]`` holds the noise
            variance ``autobayes train`` learned (standardised units).
        scaling: ``(target_mean, target_std)``: the outputs are ``(y - target_mean) / target_std``; ``None``: report
            the outputs as they are.
        noise_variance: overrides the stored noise variance (standardised units).

    Returns:
        A dict of ``mean``, ``std`` (epistemic plus the likelihood's noise), ``epistemic_std``, ``lower`` /
        ``upper`` (the normal interval at ``summary.interval``), ``noise_variance`` (original units; ``None`` when
        unknown) and ``units`` (``"original"`` or ``"network output"``).
    """
    likelihood = (spec.get("metadata") or {}).get("likelihood") or {}
    noise = noise_variance if noise_variance is not None else likelihood.get("noise_variance")
    if is_heteroscedastic(spec):
        noise = 0.0  # the summary holds the network's own noise already
    var = summary.std.double() ** 2 + (noise or 0.0)
    shift, scale = scaling if scaling is not None else (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + summary.interval / 2)
    mean, std = summary.mean.double() * scale + shift, var.sqrt() * scale
    return {
        "mean": mean, "std": std, "epistemic_std": summary.epistemic_std.double() * scale,
        "lower": mean - z * std, "upper": mean + z * std,
        "noise_variance": None if noise is None else noise * scale ** 2,
        "units": "original" if scaling is not None else "network output",
    }


NO_NOISE_WARNING = (
    "the checkpoint records no likelihood noise variance (it was converted, or trained by an older autobayes): the "
    "predictive std and intervals hold the epistemic part only; add the noise with --noise-variance V (the "
    "variance of the standardised targets)"
)


def likelihood_noise_known(spec: Dict[str, Any]) -> bool:
    """Whether the checkpoint records the regression likelihood's noise (``autobayes train`` does)."""
    likelihood = (spec.get("metadata") or {}).get("likelihood") or {}
    return likelihood.get("variance") == "heteroscedastic" or likelihood.get("noise_variance") is not None


def check_noise_variance(value: Optional[float]) -> None:
    """``--noise-variance``: a finite number >= 0, or not given."""
    from ..checks import check_nonnegative

    if value is not None:
        check_nonnegative(value, "--noise-variance")


def is_heteroscedastic(spec: Dict[str, Any]) -> bool:
    """Whether the checkpoint's regression network outputs a mean and a log-variance (``--variance heteroscedastic``)."""
    return ((spec.get("metadata") or {}).get("likelihood") or {}).get("variance") == "heteroscedastic"
