"""What ``autobayes predict`` reads: image files and folders, prepared as the checkpoint's network expects, or CSV
files of feature rows, standardised as it records."""

from __future__ import annotations

import argparse
import csv
import math
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .common import positive

__all__ = ["IMAGE_SUFFIXES", "TABLE_SUFFIXES", "find_images", "ImageBatches", "image_batches", "read_feature_rows"]

#: File suffixes read as images (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: File suffixes read as tables of feature rows (tabular checkpoints).
TABLE_SUFFIXES = (".csv",)


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
class ImageBatches:
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
        """The image as the network's input: the tensor conversion and normalisation of the training data's
        transforms (``ToTensor``, ``Normalize``: see :func:`autobayes.data.torchvision_sets.make_transforms`)."""
        import torchvision.transforms.functional as TF
        from PIL import Image

        with Image.open(path) as img:
            img = img.convert(self.mode)  # decodes every pixel: a truncated file fails here
            if img.size != (self.image_size, self.image_size):
                self.resized[img.size] = self.resized.get(img.size, 0) + 1
                img = img.resize((self.image_size, self.image_size), Image.BILINEAR)
            x = TF.to_tensor(img)
        return x if self.mean is None else TF.normalize(x, self.mean, self.std)

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

    def warn_skipped(self) -> None:
        """Warn about the images ``skip_bad`` skipped (at the command's caller, as ``run`` did)."""
        if self.skipped:
            warnings.warn(f"skipped {len(self.skipped)} unreadable image(s) (--skip-bad): {_listing(self.skipped)}",
                          stacklevel=3)

    def resized_note(self) -> str:
        """`` (N images resized from WxH to SxS)`` for the summary line; resizing to the network's input is expected."""
        if not self.resized:
            return ""
        sizes = ", ".join(f"{w}x{h}" + (f" ({n})" if len(self.resized) > 1 else "")
                          for (w, h), n in sorted(self.resized.items(), key=lambda kv: -kv[1])[:3])
        more = ", ..." if len(self.resized) > 3 else ""
        side = self.image_size
        return f"; {sum(self.resized.values())} image(s) resized from {sizes}{more} to {side}x{side}"


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


def image_batches(args: argparse.Namespace, info, inputs: Sequence[Path]) -> ImageBatches:
    """The :class:`ImageBatches` of ``inputs`` (files and folders) prepared as the checkpoint's network expects:
    its channels and image size (or ``--image-size``), its stored normalisation (or ``--mean`` / ``--std``)."""
    from ..errors import AutobayesError, ConfigError

    image_size = args.image_size or info.image_size
    if image_size is None:
        if info.num_features is not None:
            raise AutobayesError(f"checkpoint {str(args.checkpoint)!r} takes rows of {info.num_features} features, "
                                 f"not images: give a CSV file of feature rows")
        raise ConfigError(f"checkpoint {str(args.checkpoint)!r} records no input image size (it was converted "
                          f"without --image-size and not trained since): give the side of the images the network "
                          f"was trained on with --image-size N")
    positive(image_size, "--image-size")
    in_channels = int(info.in_channels or 3)
    if in_channels not in (1, 3):
        raise AutobayesError(f"predict reads grayscale or RGB images; the network of {str(args.checkpoint)!r} takes "
                             f"{in_channels} channels")
    mean, std = _normalisation(args, info, in_channels)
    return ImageBatches(find_images(inputs), in_channels, int(image_size), mean, std, args.batch_size, args.skip_bad)


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
