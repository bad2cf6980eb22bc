"""ImageFolder data (``PATH/<class>/<image>``, or ``PATH/train`` and ``PATH/val``): read as grayscale when every image
is, at the size they all share when it is square, normalised with ``mean`` / ``std`` (default 0.5 / 0.5)."""

from __future__ import annotations

import functools
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from torch.utils.data import Dataset, Subset

from ..errors import ConfigError
from .info import DatasetInfo, check_normalisation
from .sklearn_sets import split_indices
from .torchvision_sets import make_transforms

__all__ = ["GRAYSCALE_MODES", "read_image", "load_image_folder"]


#: PIL modes of one-channel images (read as ``"L"``); every other mode is read as ``"RGB"``.
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def read_image(path: str, mode: str):
    """Open an image file as a PIL image in ``mode`` (``"L"`` or ``"RGB"``): the ImageFolder loader."""
    from PIL import Image

    with open(path, "rb") as fh:
        img = Image.open(fh)
        return img.convert(mode)


def _scan_images(paths: Sequence[str]) -> Tuple[Dict[Tuple[int, int], int], bool]:
    """``({(width, height): count}, every image grayscale)`` from the files' headers (no pixel is decoded)."""
    from PIL import Image, UnidentifiedImageError

    sizes: Dict[Tuple[int, int], int] = {}
    gray = True
    for path in paths:
        try:
            with Image.open(path) as img:
                size, mode = tuple(img.size), img.mode
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise ConfigError(f"imagefolder: cannot read image {path!r} ({err}); remove or replace it") from err
        sizes[size] = sizes.get(size, 0) + 1
        gray = gray and mode in GRAYSCALE_MODES
    return sizes, gray


def load_image_folder(path: str, val_fraction: float, seed: int, augment: bool, image_size: Optional[int],
                      in_channels: Optional[int], mean: Optional[Sequence[float]], std: Optional[Sequence[float]]
                      ) -> Tuple[Dataset, Dataset, DatasetInfo]:
    """``(train, val, info)`` of the image folder ``path``: see the package doc."""
    from torchvision.datasets import ImageFolder

    if not os.path.isdir(path):
        raise ConfigError(f"imagefolder: {path!r} is not a folder; expected PATH/<class>/<image> or PATH/train, PATH/val")
    if in_channels is not None and in_channels not in (1, 3):
        raise ConfigError(f"imagefolder: in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")
    train_dir, val_dir = os.path.join(path, "train"), os.path.join(path, "val")
    two_folders = os.path.isdir(train_dir) and os.path.isdir(val_dir)
    # the loader's mode is set once the images are scanned; ImageFolder only lists the files here
    folders = [ImageFolder(train_dir), ImageFolder(val_dir)] if two_folders else [ImageFolder(path), ImageFolder(path)]
    if two_folders and folders[0].classes != folders[1].classes:
        raise ConfigError(f"imagefolder: {train_dir!r} has classes {folders[0].classes} but {val_dir!r} has "
                          f"{folders[1].classes}; give both the same class folders")
    paths = [p for p, _ in folders[0].samples] + ([p for p, _ in folders[1].samples] if two_folders else [])
    sizes, gray = _scan_images(paths)
    channels = in_channels or (1 if gray else 3)
    only = next(iter(sizes)) if len(sizes) == 1 else None
    native = only[0] if only is not None and only[0] == only[1] else None  # the side all images share, if square
    if image_size is None and native is None:
        shown = ", ".join(f"{w}x{h} ({n} images)" for (w, h), n in sorted(sizes.items(), key=lambda kv: -kv[1])[:5])
        raise ConfigError(
            f"imagefolder: the images of {path!r} do not share one square size ({shown}); choose the side they are "
            f"resized to with image_size=N (`--image-size N`)"
        )
    size = image_size or native
    if mean is None and std is None:
        stats = ([0.5] * channels, [0.5] * channels)
    else:
        stats = check_normalisation(mean, std, channels)
    train_tf, val_tf = make_transforms("imagefolder", native, augment, size, stats)  # resized only if size != native
    mode = "L" if channels == 1 else "RGB"
    for folder, tf in zip(folders, (train_tf, val_tf)):
        folder.loader = functools.partial(read_image, mode=mode)
        folder.transform = tf
    if two_folders:
        train, val = folders
    else:
        tr, va = split_indices(len(folders[0]), np.asarray(folders[0].targets), val_fraction, seed)
        train, val = Subset(folders[0], tr.tolist()), Subset(folders[1], va.tolist())
    info = DatasetInfo("classification", len(folders[0].classes), channels, size, None, f"imagefolder:{path}",
                       mean=list(stats[0]), std=list(stats[1]), class_names=list(folders[0].classes),
                       split_seed=None if two_folders else seed,
                       val_fraction=None if two_folders else float(val_fraction))
    return train, val, info
