"""``autobayes evaluate``: accuracy, calibration and uncertainty of a Bayesian checkpoint on a data set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict

from .calibration import (add_calibration_options, calibrate_classifier, calibrate_regressor, calibration_table,
                          check_calibration_options)
from .common import add_runtime_options, device_from_args, formatter, positive, refuse_text_checkpoint
from .regression import check_noise_variance

__all__ = ["add_parser", "run", "OUTPUT_FILES", "REGRESSION_FILES"]

#: Files written under --out for a classifier (the OOD histogram only with --ood-data).
OUTPUT_FILES = ("metrics.json", "predictions.csv", "reliability.png", "confidence.png", "ood_histogram.png")
#: Files written under --out for a regression checkpoint.
REGRESSION_FILES = ("metrics.json", "predictions.csv", "predicted_vs_true.png", "interval_coverage.png")

EXAMPLES = """\
examples:
  autobayes evaluate digits_bnn.safetensors --data digits --n-samples 100 --out runs/eval
  autobayes evaluate runs/digits/best.safetensors --out runs/digits/eval   # the data set it was trained on
  autobayes evaluate cifar_bnn.safetensors --data cifar10 --data-root ./data --ood-data svhn --out runs/ood
  autobayes evaluate runs/digits/best.safetensors --calibrate 0.5 --conformal 0.1 --out runs/digits/calibrated

Writes under --out: metrics.json (accuracy, NLL, Brier score, ECE, mean entropy and mutual information; with
--ood-data the AUROC of mutual information and of predictive entropy), predictions.csv (one row per example),
reliability.png, confidence.png and, with --ood-data, ood_histogram.png. The evaluation set is the data set's
validation split (the official test split of torchvision sets): by default the data set and split recorded in
the checkpoint by `autobayes train`. Images are prepared as the checkpoint records (channels, size and, for
imagefolder:PATH data, its normalisation). A regression checkpoint (e.g. trained on diabetes) gets RMSE, MAE,
R^2, Gaussian NLL and interval coverage in the targets' original units (plus RMSE and NLL of the
standardised targets, as in the training log), metrics.json, predictions.csv, predicted_vs_true.png (each
predictive mean and interval against the true value) and interval_coverage.png (the share of targets inside
the central interval of each level, against the level). With --calibrate / --conformal, metrics.json also holds
"calibration" (the temperature; NLL, ECE and Brier score before and after) and "conformal" (coverage and mean
set size or interval width), measured on the examples not calibrated on. Existing files need --force; --out
never is, or lies inside, the checkpoint or an imagefolder:PATH data set, even with --force."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a Bayesian checkpoint: metrics, per-example CSV, calibration plots",
        description="Load an autobayes checkpoint, draw --n-samples posterior predictions per example of the "
        "evaluation set, and write metrics, per-example predictions and plots.",
        epilog=EXAMPLES,
        formatter_class=formatter,
    )
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="autobayes .safetensors checkpoint")
    parser.add_argument("--data", default=None, metavar="NAME",
                        help="data set (see autobayes.data.load_dataset), e.g. digits, cifar10 (default: the data set "
                        "recorded in the checkpoint by `autobayes train`)")
    parser.add_argument("--data-root", default=None, metavar="DIR", help="folder of the torchvision data sets (default ./data)")
    parser.add_argument("--ood-data", default=None, metavar="NAME",
                        help="an out-of-distribution data set to separate from --data (both sets are scored with "
                        "the same --n-samples posterior draws, drawn from --seed)")
    parser.add_argument("--split", choices=("val", "train"), default="val", help="which split to evaluate")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--image-size", type=int, default=None, metavar="PX",
                        help="resize the images to PX x PX (default: the size recorded in the checkpoint, the one the "
                        "network was trained on; the data set's own size when none is recorded)")
    parser.add_argument("--bins", type=int, default=15, help="confidence bins of the ECE and reliability diagram")
    parser.add_argument("--noise-variance", type=float, default=None, metavar="V",
                        help="regression: the likelihood's noise variance, standardised units (default: the stored one)")
    add_runtime_options(parser)
    add_calibration_options(parser)
    return parser


def _dataset(name: str, args: argparse.Namespace, arch_kwargs: Dict[str, Any], split: str):
    """The evaluation split of ``name``, prepared as the checkpoint's network expects (``args.stored_data``: the
    checkpoint's :class:`~autobayes.data.DatasetInfo`)."""
    from ..data import DatasetInfo, is_image_folder, load_dataset
    from ..errors import ConfigError

    stored = getattr(args, "stored_data", None) or DatasetInfo.from_checkpoint({"arch": {"kwargs": arch_kwargs}})
    takes_images = stored.num_features is None
    options: Dict[str, Any] = {"image_size": stored.image_size if takes_images else None}
    if name == stored.name and stored.split_seed is not None:  # the split the network was trained with
        options.update(seed=stored.split_seed, val_fraction=stored.val_fraction)
    if is_image_folder(name) and takes_images:
        options.update(in_channels=stored.in_channels if stored.in_channels in (1, 3) else None,
                       mean=stored.mean, std=stored.std)
    train, val, info = load_dataset(name, args.data_root, **options)
    expected = (stored.in_channels, stored.image_size, stored.num_features)
    got = (info.in_channels, info.image_size, info.num_features)
    if takes_images:
        mismatch = info.image_size is None or stored.image_size is not None and got[:2] != expected[:2]
    else:
        mismatch = info.num_features != stored.num_features

    def shape(c, size, features):
        return f"{c}x{size}x{size} images" if size else f"{features} features"

    if mismatch:
        raise ConfigError(
            f"data set {name!r} has {shape(*got)} but the network takes {shape(*expected)}; choose a data set of "
            f"the same kind"
        )
    _check_same_preprocessing(name, stored, info)
    return (val if split == "val" else train), info


def _input_size(args: argparse.Namespace, stored):
    """The checkpoint's :class:`~autobayes.data.DatasetInfo` with ``--image-size``, if given, as its image size."""
    import dataclasses

    from ..errors import ConfigError

    if args.image_size is None:
        return stored
    positive(args.image_size, "--image-size")
    if stored.num_features is not None:
        raise ConfigError(f"--image-size resizes images; the network of {str(args.checkpoint)!r} takes rows of "
                          f"{stored.num_features} features: drop --image-size")
    return dataclasses.replace(stored, image_size=args.image_size)


def _check_same_preprocessing(name: str, stored, info) -> None:
    """Warn when the data set normalises its inputs otherwise than the data the network was trained on."""
    import math
    import warnings

    for what, ours, theirs in (("mean", stored.mean, info.mean), ("std", stored.std, info.std),
                               ("feature mean", stored.feature_mean, info.feature_mean),
                               ("feature std", stored.feature_std, info.feature_std)):
        if ours is None or theirs is None:
            continue
        same = len(ours) == len(theirs) and all(math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6) for a, b in zip(ours, theirs))
        if not same:
            warnings.warn(
                f"{name!r} normalises its inputs with {what} {_short(theirs)} but the network was trained on inputs "
                f"normalised with {_short(ours)}: the metrics describe inputs it was not trained on",
                stacklevel=3,
            )
            return


def _short(values) -> str:
    shown = ", ".join(f"{v:.4g}" for v in list(values)[:4])
    return f"[{shown}{', ...' if len(values) > 4 else ''}]"


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from .. import metrics, plots
    from ..data import DatasetInfo, data_path
    from ..errors import AutobayesError, ConfigError
    from ..io import atomic_output, check_inputs_untouched, check_output, load
    from ..uncertainty import predict

    positive(args.n_samples, "--n-samples")
    positive(args.batch_size, "--batch-size")
    positive(args.bins, "--bins")
    check_noise_variance(args.noise_variance)
    check_calibration_options(args)
    device = device_from_args(args)
    refuse_text_checkpoint(args.checkpoint, "evaluate")
    if args.out.exists() and not args.out.is_dir():
        raise AutobayesError(f"--out {str(args.out)!r} is a file; give a folder")
    names = [n for n in OUTPUT_FILES if args.ood_data or n != "ood_histogram.png"]
    targets = {n: args.out / n for n in names}
    if args.out.is_dir():
        for path in targets.values():
            check_output(path, overwrite=args.force, inputs=(args.checkpoint,))

    bnn = load(args.checkpoint, device=device)
    arch_kwargs = bnn.autobayes_checkpoint["arch"].get("kwargs") or {}
    args.stored_data = _input_size(args, DatasetInfo.from_checkpoint(bnn.autobayes_checkpoint))  # how _dataset
    if args.data is None:
        recorded = ((bnn.autobayes_checkpoint.get("metadata") or {}).get("dataset") or {}).get("name")
        if not recorded:
            raise ConfigError(f"{str(args.checkpoint)!r} records no data set; name one with --data, e.g. --data digits")
        args.data = recorded
    check_inputs_untouched([args.checkpoint, data_path(args.data), data_path(args.ood_data)],
                           [args.out, *targets.values()])
    data, info = _dataset(args.data, args, arch_kwargs, args.split)
    if info.task == "regression":
        return _evaluate_regression(args, bnn, data, info, device)
    ood_data = _dataset(args.ood_data, args, arch_kwargs, args.split)[0] if args.ood_data else None
    loader = DataLoader(data, batch_size=args.batch_size)
    torch.manual_seed(args.seed)
    summary = predict(bnn, loader, n_samples=args.n_samples, interval=args.interval, progress=False, device=device)
    if summary.mean.shape[1] != info.num_classes:
        raise ConfigError(
            f"the network predicts {summary.mean.shape[1]} classes but {args.data!r} has {info.num_classes}"
        )
    probs, labels = summary.mean, summary.targets
    results: Dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "data": args.data,
        "split": args.split,
        "n_examples": int(labels.shape[0]),
        "n_samples": args.n_samples,
        "seed": args.seed,
        "accuracy": metrics.accuracy(probs, labels),
        "nll": metrics.nll(probs, labels),
        "brier": metrics.brier_score(probs, labels),
        "ece": metrics.expected_calibration_error(probs, labels, n_bins=args.bins),
        "mean_predictive_entropy": float(summary.predictive_entropy.double().mean()),
        "mean_mutual_information": float(summary.mutual_information.double().mean()),
    }
    ood = None
    if ood_data is not None:
        from ..uncertainty import score_ood

        # Both sets scored with the same --n-samples posterior draws (drawn from --seed): the AUROC measures
        # the data, not the draws each set happened to get.
        ood = score_ood(bnn, loader, DataLoader(ood_data, batch_size=args.batch_size), n_samples=args.n_samples,
                        seed=args.seed, interval=args.interval, progress=False, device=device)
        results.update(
            ood_data=args.ood_data,
            ood_n_examples=int(ood.out_of_distribution.mean.shape[0]),
            ood_n_samples=ood.n_samples,
            ood_auroc_mutual_information=ood.auroc_mutual_information,
            ood_auroc_predictive_entropy=ood.auroc_predictive_entropy,
            ood_mean_mutual_information=float(ood.out_of_distribution.mutual_information.double().mean()),
        )
    results.update(calibrate_classifier(args, probs, labels))

    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_output(targets["metrics.json"], overwrite=args.force) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_output(targets["predictions.csv"], overwrite=args.force) as tmp:
        summary.to_csv(tmp)
    with atomic_output(targets["reliability.png"], overwrite=args.force) as tmp:
        plots.plot_reliability_diagram(probs, labels, tmp, n_bins=args.bins)
    with atomic_output(targets["confidence.png"], overwrite=args.force) as tmp:
        plots.plot_confidence_curve(probs, labels, tmp)
    if ood is not None:
        with atomic_output(targets["ood_histogram.png"], overwrite=args.force) as tmp:
            plots.plot_uncertainty_histogram(
                ood.in_distribution.mutual_information, ood.out_of_distribution.mutual_information, tmp,
                labels=(args.data, args.ood_data), score_name="mutual information (nats)",
            )
    print("\n".join(filter(None, [_table(results), calibration_table(results)])))
    print(f"wrote {', '.join(names)} to {args.out}")
    return 0


def _table(results: Dict[str, Any]) -> str:
    rows = [
        ("accuracy", results["accuracy"]),
        ("NLL", results["nll"]),
        ("Brier score", results["brier"]),
        ("ECE", results["ece"]),
        ("mean predictive entropy", results["mean_predictive_entropy"]),
        ("mean mutual information", results["mean_mutual_information"]),
    ]
    if "ood_data" in results:
        rows += [
            (f"AUROC MI vs {results['ood_data']}", results["ood_auroc_mutual_information"]),
            (f"AUROC entropy vs {results['ood_data']}", results["ood_auroc_predictive_entropy"]),
        ]
    head = (f"{results['checkpoint']} on {results['data']} ({results['split']}, {results['n_examples']} examples, "
            f"{results['n_samples']} samples)")
    width = max(len(name) for name, _ in rows)
    return "\n".join([head] + [f"  {name:<{width}}  {value:.4f}" for name, value in rows])


# ---------------------------------------------------------------------- regression
def _evaluate_regression(args: argparse.Namespace, bnn, data, info, device) -> int:
    """Metrics of a regression checkpoint in the targets' original units; writes :data:`REGRESSION_FILES`."""
    import math
    import warnings

    import torch
    from torch.utils.data import DataLoader

    from .. import metrics, plots
    from ..errors import ConfigError
    from ..io import atomic_output, check_output
    from ..uncertainty import predict
    from .regression import NO_NOISE_WARNING, is_heteroscedastic, likelihood_noise_known, regression_predictive

    if args.ood_data:
        raise ConfigError("--ood-data scores the uncertainty of classifiers; drop it for the regression data set "
                          f"{args.data!r}")
    spec = bnn.autobayes_checkpoint
    targets = {n: args.out / n for n in REGRESSION_FILES}
    if args.out.is_dir():
        for path in targets.values():
            check_output(path, overwrite=args.force, inputs=(args.checkpoint,))
    if args.noise_variance is None and not likelihood_noise_known(spec):
        warnings.warn(NO_NOISE_WARNING.replace("std and intervals", "std, NLL and interval coverage"), stacklevel=2)
    torch.manual_seed(args.seed)
    summary = predict(bnn, DataLoader(data, batch_size=args.batch_size), n_samples=args.n_samples, task="regression",
                      interval=args.interval, progress=False, device=device, heteroscedastic=is_heteroscedastic(spec))
    stored = args.stored_data
    trained = bool((spec.get("metadata") or {}).get("dataset"))
    # the network predicts standardised targets: those of its training data if recorded, else the data set's
    scaling = (stored.target_mean, stored.target_std) if trained else (info.target_mean, info.target_std)
    pred = regression_predictive(summary, spec, scaling, args.noise_variance)
    mean, std = pred["mean"].reshape(summary.targets.shape[0], -1), pred["std"].reshape(summary.targets.shape[0], -1)
    y = summary.targets.double().reshape(mean.shape) * info.target_std + info.target_mean
    var = std ** 2
    ss_res, ss_tot = float(((y - mean) ** 2).sum()), float(((y - y.mean(0)) ** 2).sum())
    y_std, m_std = (y - scaling[0]) / scaling[1], (mean - scaling[0]) / scaling[1]
    positive_var = bool((var > 0).all())
    results: Dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "data": args.data,
        "split": args.split,
        "task": "regression",
        "n_examples": int(y.shape[0]),
        "n_samples": args.n_samples,
        "seed": args.seed,
        "units": "original",
        "target_mean": scaling[0],
        "target_std": scaling[1],
        "rmse": metrics.rmse(mean, y),
        "mae": float((y - mean).abs().mean()),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "nll": metrics.gaussian_nll(mean, var, y) if positive_var else None,
        "interval_level": args.interval,
        "interval_coverage": metrics.interval_coverage(pred["lower"].reshape(mean.shape),
                                                       pred["upper"].reshape(mean.shape), y),
        "mean_predictive_std": float(std.mean()),
        "mean_epistemic_std": float(pred["epistemic_std"].mean()),
        "noise_std": None if pred["noise_variance"] is None else math.sqrt(pred["noise_variance"]),
        "rmse_standardised": metrics.rmse(m_std, y_std),
        "nll_standardised": metrics.gaussian_nll(m_std, var / scaling[1] ** 2, y_std) if positive_var else None,
    }
    results.update(calibrate_regressor(args, mean, std if positive_var else None, y))
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_output(targets["metrics.json"], overwrite=args.force) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_output(targets["predictions.csv"], overwrite=args.force) as tmp:
        _write_regression_csv(tmp, y, pred, mean.shape)
    with atomic_output(targets["predicted_vs_true.png"], overwrite=args.force) as tmp:
        plots.plot_predicted_vs_true(y, mean, pred["lower"].reshape(mean.shape), pred["upper"].reshape(mean.shape),
                                     tmp, level=args.interval)
    if positive_var:  # the coverage of each level's interval needs a spread
        with atomic_output(targets["interval_coverage.png"], overwrite=args.force) as tmp:
            plots.plot_interval_coverage(y, mean, std, tmp)
    print("\n".join(filter(None, [_regression_table(results), calibration_table(results)])))
    written = [n for n in REGRESSION_FILES if positive_var or n != "interval_coverage.png"]
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0


def _write_regression_csv(path: Path, y, pred: Dict[str, Any], shape) -> None:
    import csv

    columns = {"target": y, "mean": pred["mean"], "std": pred["std"], "epistemic_std": pred["epistemic_std"],
               "interval_lower": pred["lower"], "interval_upper": pred["upper"]}
    columns = {k: v.reshape(shape) for k, v in columns.items()}
    dims = shape[1]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        names = [k + ("" if dims == 1 else f"_{d}") for d in range(dims) for k in columns]
        writer.writerow(["index"] + names + ["units"])
        for i in range(shape[0]):
            writer.writerow([i] + [float(v[i, d]) for d in range(dims) for v in columns.values()] + ["original"])


def _regression_table(results: Dict[str, Any]) -> str:
    level = f"{results['interval_level']:.0%}"
    rows = [
        ("RMSE", results["rmse"]),
        ("MAE", results["mae"]),
        ("R^2", results["r2"]),
        ("NLL (Gaussian)", results["nll"]),
        (f"coverage of the {level} intervals", results["interval_coverage"]),
        ("mean predictive std", results["mean_predictive_std"]),
        ("mean epistemic std", results["mean_epistemic_std"]),
        ("noise std", results["noise_std"]),
        ("RMSE (standardised targets)", results["rmse_standardised"]),
    ]
    head = (f"{results['checkpoint']} on {results['data']} ({results['split']}, {results['n_examples']} examples, "
            f"{results['n_samples']} samples; original units)")
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name:<{width}}  " + ("n/a" if value is None else f"{value:.4f}") for name, value in rows]
    return "\n".join([head] + lines)
