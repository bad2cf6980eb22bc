"""``autobayes predict``: Monte Carlo predictions of a Bayesian checkpoint on image files or CSV rows, one CSV row each."""

from __future__ import annotations

import argparse
import csv
import math
import warnings
from pathlib import Path
from statistics import NormalDist
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .common import add_runtime_options, device_from_args, formatter, positive

__all__ = ["add_parser", "run", "IMAGE_SUFFIXES", "TABLE_SUFFIXES", "find_images", "read_feature_rows",
           "regression_predictive", "likelihood_noise_known", "is_heteroscedastic",
           "check_noise_variance"]

#: File suffixes read as images (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: File suffixes read as tables of feature rows (tabular checkpoints).
TABLE_SUFFIXES = (".csv",)

EXAMPLES = """\
examples:
  autobayes predict runs/digits/best.safetensors images/ -o predictions.csv
  autobayes predict resnet18_bnn.safetensors a.png b.png -o out.csv --n-samples 200 --skip-bad
  autobayes predict runs/diabetes/best.safetensors patients.csv -o predictions.csv

Images are read as grayscale or RGB (the checkpoint's in_channels), resized to its image_size (or
--image-size; the summary line counts the resized ones), scaled to [0, 1] and normalised with the
normalisation stored in the checkpoint (`autobayes train` stores the data set's; `autobayes convert --mean
--std` stores yours); --mean / --std override it. An unreadable image is an error; --skip-bad skips it with
a warning instead.

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
                        help="side the images are resized to (default: the checkpoint's image size)")
    parser.add_argument("--class-names", nargs="+", default=None, metavar="NAME",
                        help="names of the classes, in order (default: the ones stored in the checkpoint)")
    parser.add_argument("--noise-variance", type=float, default=None, metavar="V",
                        help="regression: the likelihood's noise variance, standardised units (default: the stored one)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable or corrupt images with a warning instead of stopping")
    add_runtime_options(parser)
    return parser


def find_images(inputs: Sequence[Path]) -> List[Path]:
    """The image files named in ``inputs``, folders searched recursively, each folder's files sorted."""
    from ..errors import AutobayesError

    found: List[Path] = []
    for item in inputs:
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise AutobayesError(f"folder {str(item)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(files)
        elif item.is_file():
            found.append(item)
        else:
            raise AutobayesError(f"input {str(item)!r} does not exist")
    return found


# ---------------------------------------------------------------------- images
class _ImageBatches:
    """Batches of image files, preprocessed as the checkpoint's network expects; unreadable files are an error,
    or (``skip_bad``) skipped and listed in :attr:`skipped`. :attr:`kept` lists the files in the batches."""

    def __init__(self, paths: List[Path], in_channels: int, image_size: int, mean, std, batch_size: int,
                 skip_bad: bool) -> None:
        self.paths, self.mode, self.image_size = paths, "L" if in_channels == 1 else "RGB", image_size
        self.mean, self.std, self.batch_size, self.skip_bad = mean, std, batch_size, skip_bad
        self.kept: List[Path] = []
        self.skipped: List[Tuple[Path, str]] = []
        self.resized: Dict[Tuple[int, int], int] = {}

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    def read(self, path: Path):
        import numpy as np
        import torch
        from PIL import Image

        with Image.open(path) as img:
            img = img.convert(self.mode)  # decodes every pixel: a truncated file fails here
            if img.size != (self.image_size, self.image_size):
                self.resized[img.size] = self.resized.get(img.size, 0) + 1
                img = img.resize((self.image_size, self.image_size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.float32) / 255.0
        x = torch.from_numpy(array.copy())
        x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
            x = (x - mean) / std
        return x

    def __iter__(self) -> Iterator[Any]:
        import torch
        from PIL import Image, UnidentifiedImageError

        from ..errors import AutobayesError

        unreadable = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
        for start in range(0, len(self.paths), self.batch_size):
            batch = []
            for path in self.paths[start:start + self.batch_size]:
                try:
                    batch.append(self.read(path))
                except unreadable as err:
                    reason = " ".join(str(err).split()) or type(err).__name__
                    if not self.skip_bad:
                        raise AutobayesError(f"cannot read image {str(path)!r} ({reason}); pass --skip-bad to skip "
                                             f"unreadable images") from err
                    self.skipped.append((path, reason))
                    continue
                self.kept.append(path)
            if batch:
                yield torch.stack(batch)
        if not self.kept:
            raise AutobayesError(f"none of the {len(self.paths)} images could be read ({_listing(self.skipped)})")


def _listing(items: List[Tuple[Path, str]], limit: int = 10) -> str:
    shown = "; ".join(f"{str(p)!r}: {reason}" for p, reason in items[:limit])
    return shown + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")


def _normalisation(args: argparse.Namespace, info, in_channels: int):
    from ..data import check_normalisation

    if args.mean is not None or args.std is not None:
        return check_normalisation(args.mean, args.std, in_channels, names=("--mean", "--std"))
    if info.mean is not None:
        return check_normalisation(info.mean, info.std, in_channels,
                                   names=("the checkpoint's stored mean", "the checkpoint's stored std"))
    warnings.warn(
        "no input normalisation given (--mean / --std) nor stored in the checkpoint: the images are fed as "
        "[0, 1] pixels; pass the mean and std the network was trained with",
        stacklevel=2,
    )
    return None, None


def _image_inputs(args: argparse.Namespace, info, inputs: Sequence[Path]) -> _ImageBatches:
    from ..errors import AutobayesError, ConfigError

    image_size = args.image_size or info.image_size
    if image_size is None:
        if info.num_features is not None:
            raise AutobayesError(f"checkpoint {str(args.checkpoint)!r} takes rows of {info.num_features} features, "
                                 f"not images: give a CSV file of feature rows")
        raise ConfigError(f"checkpoint {str(args.checkpoint)!r} records no image size; give it with --image-size N")
    positive(image_size, "--image-size")
    in_channels = int(info.in_channels or 3)
    if in_channels not in (1, 3):
        raise AutobayesError(f"predict reads grayscale or RGB images; the network of {str(args.checkpoint)!r} takes "
                             f"{in_channels} channels")
    mean, std = _normalisation(args, info, in_channels)
    return _ImageBatches(find_images(inputs), in_channels, int(image_size), mean, std, args.batch_size, args.skip_bad)


# ---------------------------------------------------------------------- CSV rows
def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_feature_rows(paths: Sequence[Path], info) -> Tuple[Any, List[Tuple[Path, int]]]:
    """``(x, [(file, row number)])``: the feature rows of CSV files, standardised as the checkpoint records.

    A file with a header (a first row that is not all numbers) gives its columns by name: the features the
    network was trained on (``info.feature_names``) in that order, or, when those are unknown or absent, every
    column if there are exactly ``info.num_features``. A file without a header has one column per feature.
    """
    import numpy as np
    import torch

    from ..errors import AutobayesError

    n_features = info.num_features
    rows: List[List[float]] = []
    where: List[Tuple[Path, int]] = []
    for path in paths:
        with open(path, newline="") as fh:
            table = [r for r in csv.reader(fh) if r and any(cell.strip() for cell in r)]
        if not table:
            raise AutobayesError(f"{str(path)!r} holds no rows")
        columns: Optional[List[int]] = None
        first = 0
        if not all(_is_number(cell) for cell in table[0]):
            header, first = [c.strip() for c in table[0]], 1
            if info.feature_names and set(info.feature_names) <= set(header):
                columns = [header.index(name) for name in info.feature_names]
            elif n_features is None or len(header) == n_features:
                columns = list(range(len(header)))
            else:
                missing = [n for n in info.feature_names or [] if n not in header]
                shown = ", ".join(repr(n) for n in missing[:4]) + (", ..." if len(missing) > 4 else "")
                detail = f"lacks {len(missing)} of them ({shown})" if missing else f"has {len(header)} columns"
                raise AutobayesError(
                    f"{str(path)!r}: the network takes {n_features} feature columns but the file {detail}; name the "
                    f"columns as `autobayes inspect CHECKPOINT` lists them, or give {n_features} columns without a header"
                )
        for line, row in enumerate(table[first:], start=first + 1):
            cells = [row[i] if i < len(row) else "" for i in columns] if columns is not None else row
            if columns is None and n_features is not None and len(cells) != n_features:
                raise AutobayesError(f"{str(path)!r} line {line}: {len(cells)} values but the network takes "
                                     f"{n_features} features (one column per feature)")
            try:
                rows.append([float(c) for c in cells])
            except ValueError:
                bad = next(c for c in cells if not _is_number(c))
                raise AutobayesError(f"{str(path)!r} line {line}: {bad!r} is not a number") from None
            where.append((path, line - first))
    x = np.asarray(rows, dtype=np.float64)
    if n_features is None and len({len(r) for r in rows}) > 1:
        raise AutobayesError("the CSV rows have different numbers of values; give one column per feature")
    if not np.isfinite(x).all():
        i = int(np.argwhere(~np.isfinite(x))[0][0])
        raise AutobayesError(f"{str(where[i][0])!r} row {where[i][1]}: a value is not finite (nan or inf)")
    if info.feature_mean is not None:
        x = (x - np.asarray(info.feature_mean)) / np.asarray(info.feature_std)
    else:
        warnings.warn("the checkpoint stores no feature standardisation: the rows are fed to the network as given",
                      stacklevel=2)
    return torch.from_numpy(x.astype(np.float32)), where


# ---------------------------------------------------------------------- regression outputs
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
        data = _image_inputs(args, info, inputs)
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
        _warn_images(data)
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
    note = "" if tables else _resized_note(data)
    print(f"wrote {len(rows)} predictions ({args.n_samples} samples each{note}) to {args.output}")
    return 0


def _warn_images(batches: _ImageBatches) -> None:
    if batches.skipped:
        warnings.warn(f"skipped {len(batches.skipped)} unreadable image(s) (--skip-bad): {_listing(batches.skipped)}",
                      stacklevel=3)


def _resized_note(batches: _ImageBatches) -> str:
    """`` (N images resized from WxH to SxS)`` for the summary line; resizing to the network's input is expected."""
    if not batches.resized:
        return ""
    sizes = ", ".join(f"{w}x{h}" + (f" ({n})" if len(batches.resized) > 1 else "")
                      for (w, h), n in sorted(batches.resized.items(), key=lambda kv: -kv[1])[:3])
    more = ", ..." if len(batches.resized) > 3 else ""
    side = batches.image_size
    return f"; {sum(batches.resized.values())} image(s) resized from {sizes}{more} to {side}x{side}"


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
