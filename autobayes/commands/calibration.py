"""``autobayes evaluate --calibrate FRACTION --conformal ALPHA``: the evaluation examples split into a calibration
part and a test part (seeded, stratified by class), a temperature and conformal sets or intervals fitted on the
first (:mod:`autobayes.calibration`), and measured on the second."""

from __future__ import annotations

import argparse
import functools
import warnings
from typing import Any, Dict, Optional, Tuple

__all__ = ["add_calibration_options", "check_calibration_options", "calibrate_classifier", "calibrate_regressor",
           "calibration_table"]

#: The calibration share when --conformal is given without --calibrate.
DEFAULT_FRACTION = 0.5


def add_calibration_options(parser: argparse.ArgumentParser) -> None:
    """``--calibrate FRACTION``, ``--conformal ALPHA``, ``--conformal-score``."""
    group = parser.add_argument_group("post-hoc calibration (see autobayes.calibration)")
    group.add_argument("--calibrate", type=float, default=None, metavar="FRACTION",
                       help="hold out FRACTION of the evaluation examples (a split stratified by class, from --seed) "
                       "to fit a temperature on (classifiers); report the NLL, ECE and Brier score before and after "
                       "on the other examples")
    group.add_argument("--conformal", type=float, default=None, metavar="ALPHA",
                       help="split conformal prediction sets (intervals for regression) of coverage 1 - ALPHA, "
                       f"calibrated on the --calibrate part ({DEFAULT_FRACTION:g} if not given); report their "
                       "coverage and mean size (width) on the other examples")
    group.add_argument("--conformal-score", default=None, choices=("lac", "aps", "absolute", "normalised"),
                       help="conformal score: lac (1 - p_y, default) or aps for classifiers; normalised "
                       "(|y - mean| / std, default) or absolute (|y - mean|) for regression")


def check_calibration_options(args: argparse.Namespace) -> None:
    """The flags' values, checked before any prediction is drawn."""
    from ..checks import check_between

    if args.calibrate is not None:
        check_between(args.calibrate, "--calibrate", 0, 1, hint="the calibration share, e.g. --calibrate 0.5")
    if args.conformal is not None:
        check_between(args.conformal, "--conformal", 0, 1, hint="the miscoverage, e.g. --conformal 0.1 for 90% sets")
    elif args.conformal_score is not None:
        from ..errors import ConfigError

        raise ConfigError("--conformal-score needs --conformal ALPHA, e.g. --conformal 0.1")


def _split(labels: Any, n: int, args: argparse.Namespace) -> Tuple[Any, Any]:
    """``(calibration, test)`` index tensors: a seeded split, stratified by ``labels`` when they allow it."""
    import torch

    from ..data.sklearn_sets import split_indices
    from ..errors import ConfigError

    fraction = args.calibrate if args.calibrate is not None else DEFAULT_FRACTION
    try:
        test, cal = split_indices(n, labels, fraction, args.seed)
    except ValueError as err:
        if labels is None:
            raise ConfigError(f"--calibrate {fraction:g} of {n} examples: {err}; choose another fraction") from err
        warnings.warn(f"the calibration split cannot be stratified by class ({err}); splitting at random",
                      stacklevel=3)
        return _split(None, n, args)
    if len(cal) < 2 or len(test) < 1:
        raise ConfigError(f"--calibrate {fraction:g} of {n} examples leaves {len(cal)} to calibrate on and {len(test)} "
                          f"to test; choose a fraction that leaves both")
    return torch.as_tensor(cal), torch.as_tensor(test)


def _conformal_entry(report, model, size_name: str) -> Dict[str, Any]:
    return {"alpha": model.alpha, "score": model.score, "threshold": model.to_dict()["threshold"],  # inf as "inf"
            "n_calibration": model.n_calibration, "n_test": report.n_examples, "nominal_coverage": report.nominal,
            "coverage": report.coverage, "expected_coverage": report.expected,
            "coverage_99_range": [report.low, report.high], size_name: report.mean_size}


def calibrate_classifier(args: argparse.Namespace, probs: Any, labels: Any) -> Dict[str, Any]:
    """``{"calibration": ..., "conformal": ...}`` entries of metrics.json for the flags given (``{}`` for none)."""
    from .. import metrics
    from ..calibration import conformal_classifier, fit_temperature

    if args.calibrate is None and args.conformal is None:
        return {}
    score = args.conformal_score or "lac"
    if score not in ("lac", "aps"):
        from ..errors import ConfigError

        raise ConfigError(f"--conformal-score {score} is a regression score; for a classifier use lac or aps")
    probs, labels = probs.double(), labels.long()
    cal, test = _split(labels.numpy(), len(labels), args)
    out: Dict[str, Any] = {}
    if args.calibrate is not None:
        ece = functools.partial(metrics.expected_calibration_error, n_bins=args.bins)
        scaler = fit_temperature(probs[cal], labels[cal])
        before, after, y = probs[test], scaler(probs[test]), labels[test]
        out["calibration"] = {
            "fraction": args.calibrate, "seed": args.seed, "n_calibration": len(cal), "n_test": len(test),
            "temperature": scaler.temperature, "accuracy": metrics.accuracy(after, y),
            **{f"{name}_{when}": fn(p, y) for name, fn in (("nll", metrics.nll), ("ece", ece),
                                                             ("brier", metrics.brier_score))
               for when, p in (("before", before), ("after", after))},
        }
    if args.conformal is not None:
        # the uncalibrated predictive: the temperature was fitted on the calibration part, which would break the
        # exchangeability of calibration and test scores
        model = conformal_classifier(probs[cal], labels[cal], alpha=args.conformal, score=score, seed=args.seed)
        report = model.evaluate(probs[test], labels[test], seed=args.seed + 1)
        out["conformal"] = {**_conformal_entry(report, model, "mean_set_size"), "empty_sets": report.empty}
    return out


def calibrate_regressor(args: argparse.Namespace, mean: Any, std: Optional[Any], targets: Any) -> Dict[str, Any]:
    """The ``{"conformal": ...}`` entry of metrics.json for a regression checkpoint (``{}`` without the flags)."""
    from ..calibration import conformal_regressor
    from ..errors import ConfigError

    if args.calibrate is None and args.conformal is None:
        return {}
    if args.conformal is None:
        raise ConfigError("--calibrate fits a temperature, which calibrates classifiers; for regression intervals "
                          "add --conformal ALPHA, e.g. --calibrate 0.5 --conformal 0.1")
    score = args.conformal_score or ("normalised" if std is not None else "absolute")
    if score not in ("absolute", "normalised"):
        raise ConfigError(f"--conformal-score {score} is a classification score; for regression use normalised or "
                          f"absolute")
    cal, test = _split(None, mean.shape[0], args)
    sd = None if std is None or score == "absolute" else std
    model = conformal_regressor(mean[cal], targets[cal], None if sd is None else sd[cal], alpha=args.conformal,
                                score=score)
    report = model.evaluate(mean[test], targets[test], None if sd is None else sd[test])
    entry = _conformal_entry(report, model, "mean_width")
    entry.update(fraction=args.calibrate if args.calibrate is not None else DEFAULT_FRACTION, seed=args.seed)
    return {"conformal": entry}


def calibration_table(results: Dict[str, Any]) -> str:
    """The lines of the calibration and conformal results (``""`` when there are none)."""
    lines = []
    cal = results.get("calibration")
    if cal:
        lines.append(f"temperature scaling, fitted on {cal['n_calibration']} examples, tested on {cal['n_test']}: "
                     f"T = {cal['temperature']:.4f}")
        for name, key in (("NLL", "nll"), ("ECE", "ece"), ("Brier score", "brier")):
            lines.append(f"  {name:<19} {cal[key + '_before']:.4f} -> {cal[key + '_after']:.4f}")
    conf = results.get("conformal")
    if conf:
        size = ("mean set size", conf["mean_set_size"]) if "mean_set_size" in conf else \
            ("mean interval width", conf["mean_width"])
        lo, hi = conf["coverage_99_range"]
        lines.append(f"conformal ({conf['score']}, alpha {conf['alpha']:g}), calibrated on {conf['n_calibration']} "
                     f"examples, tested on {conf['n_test']}:")
        lines.append(f"  coverage            {conf['coverage']:.4f} (nominal {conf['nominal_coverage']:.4f}; 99% of "
                     f"chance outcomes in [{lo:.4f}, {hi:.4f}])")
        lines.append(f"  {size[0]:<19} {size[1]:.4f}" + (f" ({conf['empty_sets']:.1%} empty)" if conf.get("empty_sets") else ""))
    return "\n".join(lines)
