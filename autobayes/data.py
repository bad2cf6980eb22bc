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

The :class:`DatasetInfo` records everything a prediction on new inputs needs -- the input normalisation (per
channel for images, per feature for tabular data), the class names, the task and, for regression, the target
standardisation -- and ``autobayes train`` stores it in every checkpoint, where ``autobayes predict`` and
``autobayes evaluate`` read it back (:meth:`DatasetInfo.from_checkpoint`).
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from .errors import ConfigError, UnknownNameError
from .registry import did_you_mean

__all__ = ["DatasetInfo", "load_dataset", "dataset_names", "check_normalisation", "is_image_folder"]


@dataclass
class DatasetInfo:
    """What a model needs to know about a data set, and what a prediction on new inputs needs to prepare them.

    Attributes:
        task: ``"classification"`` or ``"regression"``.
        num_classes: classes, or regression outputs.
        in_channels: image channels (1 for tabular data).
        image_size: side of the square images; ``None`` for tabular data.
        num_features: input features of tabular data; ``None`` for images.
        name: the data set's name (``""`` when unknown, e.g. read from a converted checkpoint).
        target_mean: regression targets were standardised as ``(y - target_mean) / target_std``.
        target_std: see ``target_mean``.
        mean: images: the per-channel normalisation ``(x - mean) / std`` applied to pixels in ``[0, 1]``.
        std: see ``mean``.
        class_names: the name of each class, in label order (classification).
        feature_mean: tabular data: the per-feature standardisation ``(x - feature_mean) / feature_std``.
        feature_std: see ``feature_mean``.
        feature_names: tabular data: the name of each feature (column), in order.
        split_seed: the seed of the training / validation split (``None``: a fixed, official split).
        val_fraction: the share of the data held out for validation (``None``: a fixed, official split).

    Example:
        >>> info = load_dataset("digits")[2]
        >>> info.class_names[:3], round(info.mean[0], 4), round(info.std[0], 4)
        (['0', '1', '2'], 0.3054, 0.3761)
    """

    task: str
    num_classes: int
    in_channels: int
    image_size: Optional[int]
    num_features: Optional[int]
    name: str
    target_mean: float = 0.0
    target_std: float = 1.0
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    class_names: Optional[List[str]] = None
    feature_mean: Optional[List[float]] = None
    feature_std: Optional[List[float]] = None
    feature_names: Optional[List[str]] = None
    split_seed: Optional[int] = None
    val_fraction: Optional[float] = None

    def model_kwargs(self) -> Dict[str, Any]:
        """The sizing arguments of :func:`autobayes.models.build_model` for this data."""
        return dict(num_classes=self.num_classes, in_channels=self.in_channels, image_size=self.image_size,
                    num_features=self.num_features)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (what ``autobayes train`` stores under ``metadata["dataset"]``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DatasetInfo":
        """The inverse of :meth:`to_dict`; fields missing from ``data`` (older checkpoints) take their defaults,
        unknown keys (newer checkpoints) are ignored.

        Example:
            >>> DatasetInfo.from_dict({"task": "classification", "num_classes": 2, "in_channels": 1,
            ...                        "image_size": None, "num_features": 30, "name": "x"}).mean is None
            True
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in dict(data).items() if k in known}
        values.setdefault("task", "classification")
        values.setdefault("num_classes", 1)
        values.setdefault("in_channels", 1)
        values.setdefault("image_size", None)
        values.setdefault("num_features", None)
        values.setdefault("name", "")
        return cls(**values)

    @classmethod
    def from_checkpoint(cls, spec: Mapping[str, Any]) -> "DatasetInfo":
        """What an autobayes checkpoint's header (``bnn.autobayes_checkpoint``) records about its inputs.

        Sources, later ones filling what earlier ones leave open: the architecture's sizing arguments
        (``spec["arch"]["kwargs"]``), the data set ``autobayes train`` recorded (``metadata["dataset"]``) and the
        preprocessing ``autobayes convert`` recorded (``metadata["preprocessing"]``: ``mean``, ``std``,
        ``class_names``, ``task``). A checkpoint that records none of them gives ``mean = None`` etc.: the
        caller decides what to do without (``autobayes predict`` warns).

        Example:
            >>> bnn = autobayes.load("runs/digits/best.safetensors")  # doctest: +SKIP
            >>> info = DatasetInfo.from_checkpoint(bnn.autobayes_checkpoint)  # doctest: +SKIP
            >>> info.mean, info.std, info.class_names  # doctest: +SKIP
        """
        arch = dict((spec.get("arch") or {}).get("kwargs") or {})
        metadata = spec.get("metadata") or {}
        recorded = metadata.get("dataset") if isinstance(metadata.get("dataset"), Mapping) else {}
        preprocessing = metadata.get("preprocessing") if isinstance(metadata.get("preprocessing"), Mapping) else {}
        data: Dict[str, Any] = dict(recorded)
        for key in ("num_classes", "in_channels", "image_size", "num_features"):
            if arch.get(key) is not None:  # the network's own sizes: what its inputs must look like
                data[key] = arch[key]
        if recorded.get("image_size") is None and recorded.get("num_features") is not None:
            data["image_size"] = None  # tabular data (build_model records a default image_size for every net)
        for key in ("mean", "std", "class_names", "task"):
            if preprocessing.get(key) is not None and data.get(key) is None:
                data[key] = preprocessing[key]
        return cls.from_dict(data)


def check_normalisation(
    mean: Any, std: Any, channels: Optional[int], *, names: Tuple[str, str] = ("mean", "std")
) -> Tuple[Optional[List[float]], Optional[List[float]]]:
    """Validate an input normalisation ``(x - mean) / std`` and give it one value per channel.

    Args:
        mean: a number or one number per channel (``None``: no normalisation; then ``std`` must be ``None``).
        std: the same for the standard deviations (each finite and ``> 0``).
        channels: the channels of the network's input (``None``: unknown, any count is accepted).
        names: how the error messages name the two values (``("--mean", "--std")`` on the command line).

    Returns:
        ``(mean, std)`` as lists of ``channels`` floats (a single value repeated), or ``(None, None)``.

    Raises:
        ConfigError: only one of the two given, a count that is neither 1 nor ``channels``, a value that is not
            a finite number, or a standard deviation ``<= 0``.

    Example:
        >>> check_normalisation(0.5, [0.25], 3)
        ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    """
    if mean is None and std is None:
        return None, None
    if (mean is None) != (std is None):
        given, missing = (names[0], names[1]) if std is None else (names[1], names[0])
        raise ConfigError(f"{given} needs {missing} too (the input normalisation is (x - mean) / std); give both, "
                          f"e.g. {names[0]} 0.5 {names[1]} 0.25")
    out = []
    for name, values in zip(names, (mean, std)):
        values = [values] if isinstance(values, (numbers.Real, str)) else list(values)
        try:
            floats = [float(v) for v in values]
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be numbers, got {values!r}") from None
        if not floats or channels is not None and len(floats) not in (1, channels):
            per = f"1 value per channel ({channels} for this model)" if channels else "1 value per channel"
            alone = " or one value for all channels" if channels and channels > 1 else ""
            raise ConfigError(f"{name} needs {per}{alone}, got {len(floats)}")
        if not all(math.isfinite(v) for v in floats):
            raise ConfigError(f"{name} values must be finite numbers, got {floats}; e.g. {names[0]} 0.5 {names[1]} 0.25")
        out.append(floats)
    mean_f, std_f = out
    if any(s <= 0 for s in std_f):
        raise ConfigError(f"{names[1]} values must be > 0 (they divide the input), got {std_f}")
    n = channels or max(len(mean_f), len(std_f))
    if len(mean_f) not in (1, n) or len(std_f) not in (1, n):
        raise ConfigError(f"{names[0]} has {len(mean_f)} values and {names[1]} {len(std_f)}; give one per channel "
                          f"(or one for all) to both")
    return (mean_f * n if len(mean_f) == 1 else mean_f), (std_f * n if len(std_f) == 1 else std_f)


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


def is_image_folder(name: str) -> bool:
    """Whether :func:`load_dataset` reads ``name`` as ImageFolder data (``"imagefolder:PATH"`` or a folder path)."""
    return name.lower().startswith("imagefolder:") or (os.sep in name or name.startswith(".")) and os.path.isdir(name)


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
    if is_image_folder(name):
        path = name.split(":", 1)[1] if key.startswith("imagefolder:") else name
        return _image_folder(path, val_fraction, seed, augment, image_size, in_channels, mean, std)
    if in_channels is not None or mean is not None or std is not None:
        raise ConfigError(
            f"in_channels / mean / std apply to imagefolder data; {name!r} has its own channels and normalisation "
            f"(see its DatasetInfo): remove them"
        )
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

    split = dict(split_seed=seed, val_fraction=float(val_fraction))
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
        info = DatasetInfo("classification", 10, 1, size, None, "digits", mean=[mean], std=[std],
                           class_names=[str(c) for c in bunch.target_names], **split)
        return train, TensorDataset(x[va], y[va]), info
    if key == "breast_cancer":
        bunch = datasets.load_breast_cancer()
        x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
        tr, va = _split(len(y), y, val_fraction, seed)
        x, f_mean, f_std = _standardise(x, tr)
        info = DatasetInfo("classification", 2, 1, None, x.shape[1], "breast_cancer",
                           class_names=[str(c) for c in bunch.target_names], feature_mean=f_mean, feature_std=f_std,
                           feature_names=[str(f) for f in bunch.feature_names], **split)
        return _tensors(x, y, tr), _tensors(x, y, va), info
    bunch = datasets.load_diabetes()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.float32)
    tr, va = _split(len(y), None, val_fraction, seed)
    x, f_mean, f_std = _standardise(x, tr)
    y_mean, y_std = float(y[tr].mean()), float(y[tr].std())
    y = ((y - y_mean) / y_std)[:, None].astype(np.float32)
    info = DatasetInfo("regression", 1, 1, None, x.shape[1], "diabetes", y_mean, y_std, feature_mean=f_mean,
                       feature_std=f_std, feature_names=[str(f) for f in bunch.feature_names], **split)
    return _tensors(x, y, tr), _tensors(x, y, va), info


def _standardise(x: np.ndarray, train_idx: np.ndarray) -> Tuple[np.ndarray, List[float], List[float]]:
    """``(x - mean) / std`` per feature with the training rows' statistics (a constant feature: std 1)."""
    mean, std = x[train_idx].mean(0), x[train_idx].std(0)
    std = np.where(std > 0, std, 1.0)
    return ((x - mean) / std).astype(np.float32), [float(v) for v in mean], [float(v) for v in std]


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
def _transforms(key: str, size: Optional[int], augment: bool, image_size: Optional[int],
                stats=None) -> Tuple[Callable, Callable]:
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
    mean, std = _STATS[key]
    names = getattr(train, "classes", None)
    info = DatasetInfo("classification", classes, channels, image_size or size, None, key, mean=list(mean),
                       std=list(std), class_names=[str(c) for c in names] if names else [str(c) for c in range(classes)])
    return train, val, info


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


def _image_folder(path: str, val_fraction: float, seed: int, augment: bool, image_size: Optional[int],
                  in_channels: Optional[int], mean: Optional[Sequence[float]], std: Optional[Sequence[float]]):
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
    train_tf, val_tf = _transforms("imagefolder", native, augment, size, stats)  # resized only if size != native
    mode = "L" if channels == 1 else "RGB"
    for folder, tf in zip(folders, (train_tf, val_tf)):
        folder.loader = functools.partial(read_image, mode=mode)
        folder.transform = tf
    if two_folders:
        train, val = folders
    else:
        tr, va = _split(len(folders[0]), np.asarray(folders[0].targets), val_fraction, seed)
        train, val = Subset(folders[0], tr.tolist()), Subset(folders[1], va.tolist())
    info = DatasetInfo("classification", len(folders[0].classes), channels, size, None, f"imagefolder:{path}",
                       mean=list(stats[0]), std=list(stats[1]), class_names=list(folders[0].classes),
                       split_seed=None if two_folders else seed,
                       val_fraction=None if two_folders else float(val_fraction))
    return train, val, info
