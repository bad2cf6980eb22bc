"""``autobayes evaluate``: accuracy, calibration and uncertainty of a Bayesian checkpoint on a data set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict

from .common import add_runtime_options, device_from_args, formatter, positive

__all__ = ["add_parser", "run", "OUTPUT_FILES"]

#: Files written under --out (the OOD histogram only with --ood-data).
OUTPUT_FILES = ("metrics.json", "predictions.csv", "reliability.png", "confidence.png", "ood_histogram.png")

EXAMPLES = """\
examples:
  autobayes evaluate digits_bnn.safetensors --data digits --n-samples 100 --out runs/eval
  autobayes evaluate runs/digits/best.safetensors --out runs/digits/eval   # the data set it was trained on
  autobayes evaluate cifar_bnn.safetensors --data cifar10 --data-root ./data --ood-data svhn --out runs/ood

Writes under --out: metrics.json (accuracy, NLL, Brier score, ECE, mean entropy and mutual information; with
--ood-data the AUROC of mutual information and of predictive entropy), predictions.csv (one row per example),
reliability.png, confidence.png and, with --ood-data, ood_histogram.png. The evaluation set is the data set's
validation split (the official test split of torchvision sets). Existing files need --force."""


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
    parser.add_argument("--bins", type=int, default=15, help="confidence bins of the ECE and reliability diagram")
    add_runtime_options(parser)
    return parser


def _dataset(name: str, args: argparse.Namespace, arch_kwargs: Dict[str, Any], split: str):
    from ..data import load_dataset
    from ..errors import ConfigError

    image_size = arch_kwargs.get("image_size")
    train, val, info = load_dataset(name, args.data_root, image_size=image_size)
    expected = (arch_kwargs.get("in_channels"), image_size, arch_kwargs.get("num_features"))
    got = (info.in_channels, info.image_size, info.num_features)
    if image_size is not None and got[:2] != expected[:2] or image_size is None and info.num_features != expected[2]:
        def shape(c, size, features):
            return f"{c}x{size}x{size} images" if size else f"{features} features"

        raise ConfigError(
            f"data set {name!r} has {shape(*got)} but the network takes {shape(*expected)}; choose a data set of "
            f"the same kind"
        )
    return (val if split == "val" else train), info


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from .. import metrics, plots
    from ..errors import AutobayesError, ConfigError
    from ..io import atomic_output, check_output, load
    from ..uncertainty import predict

    positive(args.n_samples, "--n-samples")
    positive(args.batch_size, "--batch-size")
    positive(args.bins, "--bins")
    device = device_from_args(args)
    if args.out.exists() and not args.out.is_dir():
        raise AutobayesError(f"--out {str(args.out)!r} is a file; give a folder")
    names = [n for n in OUTPUT_FILES if args.ood_data or n != "ood_histogram.png"]
    targets = {n: args.out / n for n in names}
    if args.out.is_dir():
        for path in targets.values():
            check_output(path, overwrite=args.force, inputs=(args.checkpoint,))

    bnn = load(args.checkpoint, device=device)
    arch_kwargs = bnn.autobayes_checkpoint["arch"].get("kwargs") or {}
    if args.data is None:
        recorded = ((bnn.autobayes_checkpoint.get("metadata") or {}).get("dataset") or {}).get("name")
        if not recorded:
            raise ConfigError(f"{str(args.checkpoint)!r} records no data set; name one with --data, e.g. --data digits")
        args.data = recorded
    data, info = _dataset(args.data, args, arch_kwargs, args.split)
    if info.task != "classification":
        raise ConfigError(f"evaluate supports classification data sets; {args.data!r} is a {info.task} set")
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
    print(_table(results))
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
