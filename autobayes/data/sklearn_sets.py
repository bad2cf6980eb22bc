"""scikit-learn's bundled data sets (offline): ``digits``, ``breast_cancer``, ``diabetes``, split and standardised.

The validation set is a stratified (classification) or random (regression) split of ``val_fraction`` of the
data, fixed by ``seed``; the statistics of the standardisation come from the training rows only.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from .info import DatasetInfo

__all__ = ["SKLEARN_SETS", "load_sklearn", "split_indices"]

#: The scikit-learn sets :func:`autobayes.data.load_dataset` reads.
SKLEARN_SETS = ("digits", "breast_cancer", "diabetes")


def split_indices(n: int, labels: Optional[np.ndarray], val_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, val)`` indices of ``n`` examples: ``val_fraction`` held out at random (``seed``),
    stratified by ``labels`` when given."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=labels)
    return np.sort(train_idx), np.sort(val_idx)


def load_sklearn(key: str, val_fraction: float, seed: int, augment: bool, image_size: Optional[int]
                 ) -> Tuple[Dataset, Dataset, DatasetInfo]:
    """``(train, val, info)`` of the scikit-learn set ``key`` (one of :data:`SKLEARN_SETS`): see the package doc."""
    from sklearn import datasets

    split = dict(split_seed=seed, val_fraction=float(val_fraction))
    if key == "digits":
        bunch = datasets.load_digits()
        x = bunch.images.astype(np.float32) / 16.0
        y = bunch.target.astype(np.int64)
        tr, va = split_indices(len(y), y, val_fraction, seed)
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
        tr, va = split_indices(len(y), y, val_fraction, seed)
        x, f_mean, f_std = _standardise(x, tr)
        info = DatasetInfo("classification", 2, 1, None, x.shape[1], "breast_cancer",
                           class_names=[str(c) for c in bunch.target_names], feature_mean=f_mean, feature_std=f_std,
                           feature_names=[str(f) for f in bunch.feature_names], **split)
        return _tensors(x, y, tr), _tensors(x, y, va), info
    bunch = datasets.load_diabetes()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.float32)
    tr, va = split_indices(len(y), None, val_fraction, seed)
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
