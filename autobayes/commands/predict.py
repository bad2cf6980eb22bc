"""``autobayes predict``: Monte Carlo predictions of a Bayesian checkpoint on image files, one CSV row each."""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

from .common import add_runtime_options, device_from_args, formatter, positive

__all__ = ["add_parser", "run", "IMAGE_SUFFIXES", "find_images"]

#: File suffixes read as images (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

EXAMPLES = """\
examples:
  autobayes predict resnet18_bnn.safetensors images/ -o predictions.csv
  autobayes predict digits_bnn.safetensors a.png b.png -o out.csv --n-samples 200 --class-names 0 1 2 3 4 5 6 7 8 9

Each image is read as grayscale or RGB (the checkpoint's in_channels), resized to its image_size, scaled to
[0, 1] and normalised with --mean / --std (default: the normalisation stored in the checkpoint, if any).
The CSV has one row per image: path, class, probability (mean over samples), its credible interval
(interval_lower, interval_upper at interval_level), the predictive entropy and the mutual information
(epistemic uncertainty), in nats."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict classes with uncertainty for image files",
        description="Load an autobayes checkpoint, draw --n-samples posterior predictions per image and write "
        "one CSV row per image.",
        epilog=EXAMPLES,
        formatter_class=formatter,
    )
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="autobayes .safetensors checkpoint")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUTS", help="image files and/or folders (searched recursively)")
    parser.add_argument("-o", "--output", type=Path, default=Path("predictions.csv"), metavar="CSV", help="output CSV file")
    parser.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    parser.add_argument("--mean", type=float, nargs="+", default=None, metavar="M", help="per-channel normalisation mean")
    parser.add_argument("--std", type=float, nargs="+", default=None, metavar="S", help="per-channel normalisation std")
    parser.add_argument("--class-names", nargs="+", default=None, metavar="NAME", help="names of the classes, in order")
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


class _Images:
    """A map-style dataset of image files, preprocessed as the checkpoint's network expects."""

    def __init__(self, paths: List[Path], in_channels: int, image_size: int, mean, std) -> None:
        self.paths, self.in_channels, self.image_size = paths, in_channels, image_size
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import numpy as np
        import torch
        from PIL import Image, UnidentifiedImageError

        from ..errors import AutobayesError

        path = self.paths[i]
        try:
            with Image.open(path) as img:
                img = img.convert("L" if self.in_channels == 1 else "RGB")
                if img.size != (self.image_size, self.image_size):
                    img = img.resize((self.image_size, self.image_size), Image.BILINEAR)
                array = np.asarray(img, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise AutobayesError(f"cannot read image {str(path)!r} ({err})") from err
        x = torch.from_numpy(array.copy())
        x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
            x = (x - mean) / std
        return x


def _normalisation(args: argparse.Namespace, spec: dict, in_channels: int):
    from ..errors import ConfigError

    mean, std = args.mean, args.std
    if (mean is None) != (std is None):
        raise ConfigError("--mean and --std go together (the input normalisation (x - mean) / std)")
    if mean is None:
        stored = (spec.get("metadata") or {}).get("preprocessing") or {}
        mean, std = stored.get("mean"), stored.get("std")
    if mean is None:
        warnings.warn(
            "no input normalisation given (--mean / --std) nor stored in the checkpoint: the images are fed as "
            "[0, 1] pixels; pass the mean and std the network was trained with",
            stacklevel=2,
        )
        return None, None
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, in_channels):
            raise ConfigError(f"--{name} needs 1 or {in_channels} values (one per channel), got {len(values)}")
    if any(s <= 0 for s in std):
        raise ConfigError(f"--std values must be > 0, got {std}")
    return list(mean), list(std)


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from ..errors import AutobayesError, ConfigError
    from ..io import atomic_output, check_output, load
    from ..uncertainty import predict

    positive(args.n_samples, "--n-samples")
    positive(args.batch_size, "--batch-size")
    device = device_from_args(args)
    inputs = tuple(args.inputs)
    check_output(args.output, overwrite=args.force, inputs=(args.checkpoint, *inputs))
    images = find_images(inputs)
    bnn = load(args.checkpoint, device=device)
    spec = bnn.autobayes_checkpoint
    kwargs = spec["arch"].get("kwargs", {})
    in_channels, image_size = int(kwargs.get("in_channels") or 3), kwargs.get("image_size")
    if not image_size:
        raise AutobayesError(f"checkpoint {str(args.checkpoint)!r} has no image_size: its network does not take images")
    if in_channels not in (1, 3):
        raise AutobayesError(f"predict reads grayscale or RGB images; the network of {str(args.checkpoint)!r} takes {in_channels} channels")
    mean, std = _normalisation(args, spec, in_channels)
    loader = DataLoader(_Images(images, in_channels, int(image_size), mean, std), batch_size=args.batch_size)
    torch.manual_seed(args.seed)
    summary = predict(bnn, loader, n_samples=args.n_samples, interval=args.interval, progress=False, device=device)
    if summary.mean.dim() != 2:
        raise AutobayesError("predict: the network's output is not class logits (batch, classes)")
    num_classes = summary.mean.shape[1]
    names = args.class_names
    if names is not None and len(names) != num_classes:
        raise ConfigError(f"--class-names gives {len(names)} names for {num_classes} classes")
    rows = _rows(images, summary, names)
    with atomic_output(args.output, overwrite=args.force, inputs=(args.checkpoint, *inputs)) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(f"wrote {len(rows)} predictions ({args.n_samples} samples each) to {args.output}")
    return 0


def _rows(images: List[Path], summary, names: Optional[List[str]]) -> list:
    rows = []
    for i, path in enumerate(images):
        c = int(summary.predicted[i])
        rows.append({
            "path": str(path),
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
