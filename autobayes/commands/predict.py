"""``autobayes predict``: Monte Carlo predictions of a Bayesian checkpoint on image files or CSV rows, one CSV row each.

Reading the inputs lives in :mod:`.inputs`, the regression predictive (shared with ``evaluate``) in :mod:`.regression`;
the names they define stay importable from here."""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .common import add_runtime_options, device_from_args, formatter, positive, refuse_text_checkpoint
from .inputs import IMAGE_SUFFIXES, TABLE_SUFFIXES, find_images, image_batches, read_feature_rows
from .regression import (NO_NOISE_WARNING, check_noise_variance, is_heteroscedastic, likelihood_noise_known,
                         regression_predictive)

__all__ = ["add_parser", "run", "IMAGE_SUFFIXES", "TABLE_SUFFIXES", "find_images", "read_feature_rows",
           "regression_predictive", "likelihood_noise_known", "is_heteroscedastic",
           "check_noise_variance"]

EXAMPLES = """\
examples:
  autobayes predict runs/digits/best.safetensors images/ -o predictions.csv
  autobayes predict resnet18_bnn.safetensors a.png b.png -o out.csv --n-samples 200 --skip-bad
  autobayes predict runs/diabetes/best.safetensors patients.csv -o predictions.csv

Images are read as grayscale or RGB (the checkpoint's in_channels), resized to its image_size, the size of
the images the network was trained on (or --image-size; an image of that size is never resized, and the summary
line counts the resized ones; a converted checkpoint that records no size needs --image-size), scaled to
[0, 1] and normalised with the
normalisation stored in the checkpoint (`autobayes train` stores the data set's; `autobayes convert --mean
--std` stores yours); --mean / --std override it. An unreadable image is an error; --skip-bad skips it with
a warning instead. The output CSV is never one of the inputs nor inside an input folder, even with --force.

A tabular checkpoint reads CSV files of feature rows: with a header, the columns named as the features the
network was trained on (`autobayes inspect CHECKPOINT` lists them; other columns are ignored), else exactly one
column per feature, in order; raw values, standardised with the statistics stored in the checkpoint.

The CSV has one row per input: path (and row, for CSV input); for classification the class, its name, its
probability (mean over samples) with its credible interval (interval_lower, interval_upper at interval_level),
the predictive entropy and the mutual information (epistemic uncertainty) in nats; for regression the
predictive mean and standard deviation (epistemic + the likelihood's noise), the epistemic standard deviation
and the predictive interval, in the units named by the `units` column ("original": the target
standardisation of training undone)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict with uncertainty for image files or CSV rows",
        description="Load an autobayes checkpoint, draw --n-samples posterior predictions per input (an image, or "
        "a row of a CSV file for tabular checkpoints) and write one CSV row per input.",
        epilog=EXAMPLES,
        formatter_class=formatter,
    )
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="autobayes .safetensors checkpoint")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUTS",
                        help="image files and/or folders (searched recursively), or CSV files of feature rows")
    parser.add_argument("-o", "--output", type=Path, default=Path("predictions.csv"), metavar="CSV", help="output CSV file")
    parser.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    parser.add_argument("--mean", type=float, nargs="+", default=None, metavar="M",
                        help="per-channel normalisation mean (default: the one stored in the checkpoint)")
    parser.add_argument("--std", type=float, nargs="+", default=None, metavar="S",
                        help="per-channel normalisation std (default: the one stored in the checkpoint)")
    parser.add_argument("--image-size", type=int, default=None, metavar="PX",
                        help="side the images are resized to (default: the checkpoint's image size, that of the "
                        "images it was trained on)")
    parser.add_argument("--class-names", nargs="+", default=None, metavar="NAME",
                        help="names of the classes, in order (default: the ones stored in the checkpoint)")
    parser.add_argument("--noise-variance", type=float, default=None, metavar="V",
                        help="regression: the likelihood's noise variance, standardised units (default: the stored one)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable or corrupt images with a warning instead of stopping")
    add_runtime_options(parser)
    return parser


# ---------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import DatasetInfo
    from ..errors import AutobayesError, ConfigError
    from ..io import atomic_output, check_output, load
    from ..uncertainty import predict

    positive(args.n_samples, "--n-samples")
    positive(args.batch_size, "--batch-size")
    check_noise_variance(args.noise_variance)
    device = device_from_args(args)
    inputs = tuple(args.inputs)
    check_output(args.output, overwrite=args.force, inputs=(args.checkpoint, *inputs))
    refuse_text_checkpoint(args.checkpoint, "predict")
    tables = [p for p in inputs if p.suffix.lower() in TABLE_SUFFIXES]
    if tables and len(tables) != len(inputs):
        raise ConfigError("give either image files / folders or CSV files of feature rows, not both")
    for path in tables:
        if not path.is_file():
            raise AutobayesError(f"input {str(path)!r} does not exist")
    image_flags = [f for f, v in (("--mean", args.mean), ("--std", args.std), ("--image-size", args.image_size)) if v]
    if tables and image_flags:
        raise ConfigError(f"{' / '.join(image_flags)} prepare images; CSV rows are standardised with the statistics "
                          f"stored in the checkpoint: drop {image_flags[0]}")
    bnn = load(args.checkpoint, device=device)
    spec = bnn.autobayes_checkpoint
    info = DatasetInfo.from_checkpoint(spec)
    task = info.task if info.task in ("classification", "regression") else "classification"
    if tables:
        if info.num_features is None and info.image_size is not None:
            raise AutobayesError(f"the network of {str(args.checkpoint)!r} takes {info.in_channels}x{info.image_size}x"
                                 f"{info.image_size} images, not rows of features: give image files or folders")
        x, where = read_feature_rows(tables, info)
        data, labels = torch.utils.data.DataLoader(x, batch_size=args.batch_size), [(str(p), n) for p, n in where]
    else:
        data = image_batches(args, info, inputs)
    if task == "regression" and args.class_names is not None:
        raise ConfigError(f"--class-names names the classes of a classifier; {str(args.checkpoint)!r} is a "
                          f"regression network: drop --class-names")
    if task == "regression" and args.noise_variance is None and not likelihood_noise_known(spec):
        warnings.warn(NO_NOISE_WARNING, stacklevel=2)
    torch.manual_seed(args.seed)
    summary = predict(bnn, data, n_samples=args.n_samples, task=task, interval=args.interval, progress=False,
                      device=device, heteroscedastic=task == "regression" and is_heteroscedastic(spec))
    if not tables:
        labels = [(str(p), None) for p in data.kept]
        data.warn_skipped()
    if task == "regression":
        trained = bool((spec.get("metadata") or {}).get("dataset"))  # autobayes train records the target scaling
        scaling = (info.target_mean, info.target_std) if trained else None
        pred = regression_predictive(summary, spec, scaling, args.noise_variance)
        rows = _regression_rows(labels, pred, summary)
    else:
        if summary.mean.dim() != 2:
            raise AutobayesError("predict: the network's output is not class logits (batch, classes)")
        rows = _rows(labels, summary, _class_names(args, info, summary.mean.shape[1]))
    with atomic_output(args.output, overwrite=args.force, inputs=(args.checkpoint, *inputs)) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    note = "" if tables else data.resized_note()
    print(f"wrote {len(rows)} predictions ({args.n_samples} samples each{note}) to {args.output}")
    return 0


def _class_names(args: argparse.Namespace, info, num_classes: int) -> Optional[List[str]]:
    from ..errors import ConfigError

    if args.class_names is not None:
        if len(args.class_names) != num_classes:
            raise ConfigError(f"--class-names gives {len(args.class_names)} names for {num_classes} classes")
        return list(args.class_names)
    names = info.class_names
    return list(names) if names and len(names) == num_classes else None


def _where(label: Tuple[str, Optional[int]]) -> Dict[str, Any]:
    path, row = label
    return {"path": path} if row is None else {"path": path, "row": row}


def _rows(labels: List[Tuple[str, Optional[int]]], summary, names: Optional[List[str]]) -> list:
    rows = []
    for i, label in enumerate(labels):
        c = int(summary.predicted[i])
        rows.append({
            **_where(label),
            "class": c,
            "class_name": names[c] if names else str(c),
            "probability": float(summary.mean[i, c]),
            "interval_lower": float(summary.lower[i, c]),
            "interval_upper": float(summary.upper[i, c]),
            "interval_level": summary.interval,
            "entropy": float(summary.predictive_entropy[i]),
            "mutual_information": float(summary.mutual_information[i]),
            "n_samples": summary.n_samples,
        })
    return rows


def _regression_rows(labels: List[Tuple[str, Optional[int]]], pred: Dict[str, Any], summary) -> list:
    mean = pred["mean"].reshape(len(labels), -1)
    dims = mean.shape[1]
    rows = []
    for i, label in enumerate(labels):
        row: Dict[str, Any] = dict(_where(label))
        for d in range(dims):
            suffix = "" if dims == 1 else f"_{d}"
            for key in ("mean", "std", "epistemic_std"):
                row[key + suffix] = float(pred[key].reshape(len(labels), -1)[i, d])
            row["interval_lower" + suffix] = float(pred["lower"].reshape(len(labels), -1)[i, d])
            row["interval_upper" + suffix] = float(pred["upper"].reshape(len(labels), -1)[i, d])
        row.update(interval_level=summary.interval, units=pred["units"], n_samples=summary.n_samples)
        rows.append(row)
    return rows
