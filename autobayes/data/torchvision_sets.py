"""torchvision's data sets (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``svhn``), read from a folder,
never downloaded unless asked; and the image transforms ImageFolder data shares with them."""

from __future__ import annotations

import os
from typing import Callable, Optional, Tuple

from torch.utils.data import Dataset

from ..errors import ConfigError
from .info import DatasetInfo

__all__ = ["TORCHVISION_SETS", "load_torchvision", "make_transforms"]

#: name -> (torchvision class name, channels, size, classes, train kwargs, val kwargs)
TORCHVISION_SETS = {
    "mnist": ("MNIST", 1, 28, 10, {"train": True}, {"train": False}),
    "fashion_mnist": ("FashionMNIST", 1, 28, 10, {"train": True}, {"train": False}),
    "cifar10": ("CIFAR10", 3, 32, 10, {"train": True}, {"train": False}),
    "cifar100": ("CIFAR100", 3, 32, 100, {"train": True}, {"train": False}),
    "svhn": ("SVHN", 3, 32, 10, {"split": "train"}, {"split": "test"}),
}
# per-channel mean / std of the training sets (standard values)
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


def make_transforms(key: str, size: Optional[int], augment: bool, image_size: Optional[int],
                    stats=None) -> Tuple[Callable, Callable]:
    """``(train, val)`` image transforms: resize to ``image_size`` (when it differs from ``size``), to tensor,
    normalise with ``stats`` (default: the set's own, else 0.5 / 0.5); the training one augments when asked."""
    from torchvision import transforms as T

    mean, std = stats or _STATS.get(key, ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    common = []
    if image_size is not None and image_size != size:
        common.append(T.Resize((image_size, image_size)))
        size = image_size
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    train = list(common)
    if augment:
        train.append(T.RandomCrop(size, padding=max(1, size // 8)))
        if key in ("cifar10", "cifar100", "imagefolder"):
            train.append(T.RandomHorizontalFlip())
    return T.Compose(train + tail), T.Compose(common + tail)


def load_torchvision(key: str, root: str, augment: bool, image_size: Optional[int], download: bool
                     ) -> Tuple[Dataset, Dataset, DatasetInfo]:
    """``(train, val, info)`` of the torchvision set ``key`` read from ``root``; the official test split validates."""
    import torchvision

    cls_name, channels, size, classes, train_kw, val_kw = TORCHVISION_SETS[key]
    cls = getattr(torchvision.datasets, cls_name)
    train_tf, val_tf = make_transforms(key, size, augment, image_size)
    try:
        train = cls(root, download=download, transform=train_tf, **train_kw)
        val = cls(root, download=download, transform=val_tf, **val_kw)
    except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True to download it"
        raise ConfigError(
            f"{key}: data set not found under {os.path.abspath(root)!r} ({err}). Download it once with "
            f"`autobayes train --data {key} --data-root {root} --download` or, in Python, "
            f"torchvision.datasets.{cls_name}({root!r}, download=True)"
        ) from err
    mean, std = _STATS[key]
    names = getattr(train, "classes", None)
    info = DatasetInfo("classification", classes, channels, image_size or size, None, key, mean=list(mean),
                       std=list(std), class_names=[str(c) for c in names] if names else [str(c) for c in range(classes)])
    return train, val, info
