"""Data sets for training and evaluation: scikit-learn's bundled sets (offline), torchvision sets, ImageFolder.

``load_dataset(name)`` returns ``(train_dataset, val_dataset, DatasetInfo)``; the datasets yield
``(input, target)`` pairs. Names:

* ``"digits"``: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), as ``1x8x8`` float images
  scaled to ``[0, 1]`` then standardised with the training split's pixel mean and standard deviation; ships
  with scikit-learn, so it works offline (the quick start's data).
* ``"breast_cancer"``: 569 examples, 30 features, 2 classes (tabular), standardised per feature.
* ``"diabetes"``: 442 examples, 10 features, one regression target; features and target standardised
  (``DatasetInfo.target_mean`` / ``target_std`` undo the latter).
* ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"``, ``"svhn"``: torchvision data sets read from
  ``root`` (never downloaded unless ``download=True``); the official test split is the validation set.
* ``"imagefolder:PATH"`` (or a directory path): ``PATH/train`` and ``PATH/val`` when both exist, else one folder
  split at random. The images are read as grayscale (``"L"``) when every one is grayscale, else as RGB (or as
  ``in_channels`` asks), at their own size when they all share one square size (else ``image_size`` is
  required), and normalised with ``mean`` / ``std`` (default 0.5 / 0.5 per channel).

For the scikit-learn sets the validation set is a stratified (classification) or random (regression) split of
``val_fraction`` of the data, fixed by ``seed``.

The :class:`DatasetInfo` (:mod:`.info`) records what a prediction on new inputs needs; ``autobayes train`` stores
it in every checkpoint. Each family of sets has its module: :mod:`.sklearn_sets`, :mod:`.torchvision_sets`,
:mod:`.imagefolder`; this one picks by name. :mod:`.docstrings` gives the examples real text that is on every
machine (the standard library's docstrings).
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

from torch.utils.data import Dataset

from ..errors import ConfigError, UnknownNameError
from ..registry import did_you_mean
from .imagefolder import GRAYSCALE_MODES, load_image_folder, read_image  # noqa: F401 - importable here as before
from .info import DatasetInfo, check_normalisation
from .sklearn_sets import SKLEARN_SETS, load_sklearn
from .torchvision_sets import TORCHVISION_SETS, load_torchvision

__all__ = ["DatasetInfo", "load_dataset", "dataset_names", "check_normalisation", "is_image_folder", "data_path"]


def dataset_names() -> List[str]:
    """Names accepted by :func:`load_dataset` (plus ``"imagefolder:PATH"``)."""
    return list(SKLEARN_SETS) + list(TORCHVISION_SETS) + ["imagefolder:PATH"]


def is_image_folder(name: str) -> bool:
    """Whether :func:`load_dataset` reads ``name`` as ImageFolder data (``"imagefolder:PATH"`` or a folder path)."""
    return name.lower().startswith("imagefolder:") or (os.sep in name or name.startswith(".")) and os.path.isdir(name)


def data_path(name: Optional[str]) -> Optional[str]:
    """The folder :func:`load_dataset` reads for ``name`` when it is ImageFolder data (``"imagefolder:PATH"`` or a
    folder path), else ``None`` (the commands keep their outputs out of it).

    Example:
        >>> data_path("imagefolder:photos/"), data_path("digits")
        ('photos/', None)
    """
    if not name or not is_image_folder(name):
        return None
    return name.split(":", 1)[1] if name.lower().startswith("imagefolder:") else name


def load_dataset(
    name: str,
    root: Optional[str] = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    augment: bool = False,
    image_size: Optional[int] = None,
    download: bool = False,
    in_channels: Optional[int] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> Tuple[Dataset, Dataset, DatasetInfo]:
    """Load a training and a validation set.

    Args:
        name: see the module doc (``"digits"``, ``"breast_cancer"``, ``"diabetes"``, ``"mnist"``,
            ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"``, ``"svhn"``, ``"imagefolder:PATH"``).
        root: folder of the torchvision data sets (default ``./data``).
        val_fraction: share of the data held out for validation (scikit-learn sets, single-folder ImageFolder).
        seed: seed of the split.
        augment: standard augmentation of the training images (random shifts; plus horizontal flips for
            CIFAR and ImageFolder); ignored for tabular data.
        image_size: resize images to this side (e.g. 32 or 64 for torchvision / timm networks whose stems
            need larger inputs than 8x8 digits). ImageFolder images keep their own size when they all share one
            square size and ``image_size`` is not given.
        download: let torchvision download a missing data set into ``root``.
        in_channels: ImageFolder only: read the images as grayscale (1) or RGB (3); default 1 when every image
            is grayscale, else 3.
        mean: ImageFolder only: per-channel normalisation mean of the ``[0, 1]`` pixels (default 0.5); the other
            sets have their own, recorded in :attr:`DatasetInfo.mean`.
        std: ImageFolder only: per-channel normalisation standard deviation (default 0.5).

    Returns:
        ``(train_dataset, val_dataset, info)``.

    Example:
        >>> train_set, val_set, info = load_dataset("digits")
        >>> len(train_set), len(val_set), info.image_size
        (1437, 360, 8)
    """
    if not isinstance(name, str):
        raise ConfigError(f"dataset name must be a string, got {name!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    key = name.lower().replace("-", "_")
    path = data_path(name)
    if path is not None:
        return load_image_folder(path, val_fraction, seed, augment, image_size, in_channels, mean, std)
    if in_channels is not None or mean is not None or std is not None:
        raise ConfigError(
            f"in_channels / mean / std apply to imagefolder data; {name!r} has its own channels and normalisation "
            f"(see its DatasetInfo): remove them"
        )
    if key in SKLEARN_SETS:
        return load_sklearn(key, val_fraction, seed, augment, image_size)
    if key in TORCHVISION_SETS:
        return load_torchvision(key, root or "./data", augment, image_size, download)
    raise UnknownNameError(
        f"unknown dataset {name!r}; choose one of {dataset_names()}.{did_you_mean(key, dataset_names())}"
    )
