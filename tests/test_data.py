"""Data sets: scikit-learn's bundled sets (splits, scaling), torchvision sets missing from disk, ImageFolder."""

import numpy as np
import pytest
import torch

from autobayes.data import load_dataset
from autobayes.errors import ConfigError, UnknownNameError


def test_digits_split_is_stratified_seeded_and_standardised():
    train, val, info = load_dataset("digits", seed=0)
    assert (len(train), len(val)) == (1437, 360)
    assert (info.task, info.num_classes, info.in_channels, info.image_size) == ("classification", 10, 1, 8)
    x, y = train.tensors
    assert x.shape == (1437, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3  # standardised with training stats
    counts = torch.bincount(val.tensors[1], minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # stratified: ~36 per class
    again = load_dataset("digits", seed=0)[1].tensors[0]
    other = load_dataset("digits", seed=1)[1].tensors[0]
    assert torch.equal(again, val.tensors[0]) and not torch.equal(other, val.tensors[0])


def test_digits_resize_and_augment():
    train, val, info = load_dataset("digits", image_size=16, augment=True)
    assert info.image_size == 16
    x, _ = train[0]
    assert x.shape == (1, 16, 16) and val[0][0].shape == (1, 16, 16)


def test_breast_cancer_is_standardised_tabular():
    train, val, info = load_dataset("breast_cancer")
    assert (info.task, info.num_classes, info.image_size, info.num_features) == ("classification", 2, None, 30)
    x = train.tensors[0]
    np.testing.assert_allclose(x.mean(0).numpy(), 0, atol=1e-4)
    assert len(train) + len(val) == 569


def test_diabetes_is_standardised_regression():
    train, val, info = load_dataset("diabetes")
    assert (info.task, info.num_classes, info.num_features) == ("regression", 1, 10)
    y = train.tensors[1]
    assert y.shape == (len(train), 1) and abs(float(y.mean())) < 1e-4
    assert 140 < info.target_mean < 165 and 70 < info.target_std < 85  # the raw targets' scale


def test_missing_torchvision_set_names_folder_and_download(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_dataset("cifar10", root=str(tmp_path))
    message = str(err.value)
    assert str(tmp_path) in message and "--download" in message and "download=True" in message


def test_unknown_dataset_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean 'digits'"):
        load_dataset("digit")
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.5)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    train, val, info = load_dataset(f"imagefolder:{tmp_path}", image_size=16, val_fraction=0.2)
    assert (info.num_classes, info.in_channels, info.image_size) == (2, 3, 16)
    assert len(train) == 8 and len(val) == 2
    assert train[0][0].shape == (3, 16, 16)
