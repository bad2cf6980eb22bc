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
  split at random.

For the scikit-learn sets the validation set is a stratified (classification) or random (regression) split of
``val_fraction`` of the data, fixed by ``seed``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from .errors import ConfigError, UnknownNameError
from .registry import did_you_mean

__all__ = ["DatasetInfo", "load_dataset", "dataset_names"]


@dataclass
class DatasetInfo:
    """What a model needs to know about a data set.

    Attributes:
        task: ``"classification"`` or ``"regression"``.
        num_classes: classes, or regression outputs.
        in_channels: image channels (1 for tabular data).
        image_size: side of the square images; ``None`` for tabular data.
        num_features: input features of tabular data; ``None`` for images.
        name: the data set's name.
        target_mean: regression targets were standardised as ``(y - target_mean) / target_std``.
        target_std: see ``target_mean``.
    """

    task: str
    num_classes: int
    in_channels: int
    image_size: Optional[int]
    num_features: Optional[int]
    name: str
    target_mean: float = 0.0
    target_std: float = 1.0

    def model_kwargs(self) -> Dict[str, Any]:
        """The sizing arguments of :func:`autobayes.models.build_model` for this data."""
        return dict(num_classes=self.num_classes, in_channels=self.in_channels, image_size=self.image_size,
                    num_features=self.num_features)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# name -> (torchvision class name, channels, size, classes, train kwargs, val kwargs)
_TORCHVISION = {
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
_SKLEARN = ("digits", "breast_cancer", "diabetes")


def dataset_names() -> list:
    """Names accepted by :func:`load_dataset` (plus ``"imagefolder:PATH"``)."""
    return list(_SKLEARN) + list(_TORCHVISION) + ["imagefolder:PATH"]


def load_dataset(
    name: str,
    root: Optional[str] = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    augment: bool = False,
    image_size: Optional[int] = None,
    download: bool = False,
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
            need larger inputs than 8x8 digits).
        download: let torchvision download a missing data set into ``root``.

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
    if key.startswith("imagefolder:") or (os.sep in name or name.startswith(".")) and os.path.isdir(name):
        path = name.split(":", 1)[1] if key.startswith("imagefolder:") else name
        return _image_folder(path, val_fraction, seed, augment, image_size)
    if key in ("digits", "breast_cancer", "diabetes"):
        return _sklearn(key, val_fraction, seed, augment, image_size)
    if key in _TORCHVISION:
        return _torchvision(key, root or "./data", augment, image_size, download)
    raise UnknownNameError(
        f"unknown dataset {name!r}; choose one of {dataset_names()}.{did_you_mean(key, dataset_names())}"
    )


# ---------------------------------------------------------------------- scikit-learn sets
def _split(n: int, labels: Optional[np.ndarray], val_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=labels)
    return np.sort(train_idx), np.sort(val_idx)


def _sklearn(key: str, val_fraction: float, seed: int, augment: bool, image_size: Optional[int]):
    from sklearn import datasets

    if key == "digits":
        bunch = datasets.load_digits()
        x = bunch.images.astype(np.float32) / 16.0
        y = bunch.target.astype(np.int64)
        tr, va = _split(len(y), y, val_fraction, seed)
        mean, std = float(x[tr].mean()), float(x[tr].std())
        x = torch.from_numpy((x - mean) / std).unsqueeze(1)
        size = 8
        if image_size is not None and image_size != 8:
            x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
            size = image_size
        y = torch.from_numpy(y)
        train = TensorDataset(x[tr], y[tr])
        if augment:
            train = _Shifted(train, max_shift=max(1, size // 8))
        info = DatasetInfo("classification", 10, 1, size, None, "digits")
        return train, TensorDataset(x[va], y[va]), info
    if key == "breast_cancer":
        bunch = datasets.load_breast_cancer()
        x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
        tr, va = _split(len(y), y, val_fraction, seed)
        x = _standardise(x, tr)
        info = DatasetInfo("classification", 2, 1, None, x.shape[1], "breast_cancer")
        return _tensors(x, y, tr), _tensors(x, y, va), info
    bunch = datasets.load_diabetes()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.float32)
    tr, va = _split(len(y), None, val_fraction, seed)
    x = _standardise(x, tr)
    y_mean, y_std = float(y[tr].mean()), float(y[tr].std())
    y = ((y - y_mean) / y_std)[:, None].astype(np.float32)
    info = DatasetInfo("regression", 1, 1, None, x.shape[1], "diabetes", y_mean, y_std)
    return _tensors(x, y, tr), _tensors(x, y, va), info


def _standardise(x: np.ndarray, train_idx: np.ndarray) -> np.ndarray:
    mean, std = x[train_idx].mean(0), x[train_idx].std(0)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def _tensors(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))


class _Shifted(Dataset):
    """Random integer shifts (zero padding) of in-memory images: the digits' augmentation."""

    def __init__(self, base: TensorDataset, max_shift: int = 1) -> None:
        self.base = base
        self.max_shift = max_shift

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        s = self.max_shift
        dx, dy = (int(v) for v in torch.randint(-s, s + 1, (2,)))
        fill = float(x.min())
        padded = torch.nn.functional.pad(x, (s, s, s, s), value=fill)
        h, w = x.shape[-2:]
        return padded[..., s + dy: s + dy + h, s + dx: s + dx + w], y


# ---------------------------------------------------------------------- torchvision sets
def _transforms(key: str, size: int, augment: bool, image_size: Optional[int]) -> Tuple[Callable, Callable]:
    from torchvision import transforms as T

    mean, std = _STATS.get(key, ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
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


def _torchvision(key: str, root: str, augment: bool, image_size: Optional[int], download: bool):
    import torchvision

    cls_name, channels, size, classes, train_kw, val_kw = _TORCHVISION[key]
    cls = getattr(torchvision.datasets, cls_name)
    train_tf, val_tf = _transforms(key, size, augment, image_size)
    try:
        train = cls(root, download=download, transform=train_tf, **train_kw)
        val = cls(root, download=download, transform=val_tf, **val_kw)
    except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True to download it"
        raise ConfigError(
            f"{key}: data set not found under {os.path.abspath(root)!r} ({err}). Download it once with "
            f"`autobayes train --data {key} --data-root {root} --download` or, in Python, "
            f"torchvision.datasets.{cls_name}({root!r}, download=True)"
        ) from err
    info = DatasetInfo("classification", classes, channels, image_size or size, None, key)
    return train, val, info


def _image_folder(path: str, val_fraction: float, seed: int, augment: bool, image_size: Optional[int]):
    from torchvision.datasets import ImageFolder

    if not os.path.isdir(path):
        raise ConfigError(f"imagefolder: {path!r} is not a folder; expected PATH/<class>/<image> or PATH/train, PATH/val")
    size = image_size or 64
    train_tf, val_tf = _transforms("imagefolder", size, augment, size)
    from torchvision import transforms as T

    def fix(tf):  # ImageFolder images have various sizes: always resize
        return T.Compose([T.Resize((size, size))] + [t for t in tf.transforms if not isinstance(t, T.Resize)])

    train_tf, val_tf = fix(train_tf), fix(val_tf)
    train_dir, val_dir = os.path.join(path, "train"), os.path.join(path, "val")
    if os.path.isdir(train_dir) and os.path.isdir(val_dir):
        train, val = ImageFolder(train_dir, transform=train_tf), ImageFolder(val_dir, transform=val_tf)
        classes = len(train.classes)
    else:
        full_train, full_val = ImageFolder(path, transform=train_tf), ImageFolder(path, transform=val_tf)
        tr, va = _split(len(full_train), np.asarray(full_train.targets), val_fraction, seed)
        train, val = Subset(full_train, tr.tolist()), Subset(full_val, va.tolist())
        classes = len(full_train.classes)
    info = DatasetInfo("classification", classes, 3, size, None, f"imagefolder:{path}")
    return train, val, info
