"""Data sets: scikit-learn's bundled sets (splits, scaling), torchvision sets missing from disk, ImageFolder."""

import numpy as np
import pytest
import torch

from autobayes.data import DatasetInfo, check_normalisation, load_dataset
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


# ---------------------------------------------------------------------- what a prediction needs (DatasetInfo)
def test_every_loader_records_its_input_normalisation_and_class_names():
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

    # digits: the recorded mean / std are the training split's pixel statistics, the ones the tensors carry
    train, _, info = load_dataset("digits")
    raw = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)
    x = train.tensors[0]
    restored = x * info.std[0] + info.mean[0]  # undo the standardisation: pixels in [0, 1] again
    assert float(restored.min()) > -1e-5 and float(restored.max()) < 1 + 1e-5
    assert abs(info.mean[0] - float(restored.mean())) < 1e-5 and abs(info.mean[0] - 0.3054) < 1e-4
    assert abs(info.std[0] - 0.3761) < 1e-4 and raw.shape[0] == 1797
    assert info.class_names == [str(i) for i in range(10)] and (info.split_seed, info.val_fraction) == (0, 0.2)

    train, _, info = load_dataset("breast_cancer", seed=3)
    assert info.class_names == list(load_breast_cancer().target_names) and info.split_seed == 3
    assert info.feature_names == list(load_breast_cancer().feature_names) and len(info.feature_mean) == 30
    assert info.mean is None  # tabular: per-feature statistics instead

    train, val, info = load_dataset("diabetes")
    bunch = load_diabetes()
    x_raw = torch.from_numpy(bunch.data.astype(np.float32))
    standardised = (x_raw - torch.tensor(info.feature_mean)) / torch.tensor(info.feature_std)
    rows = {tuple(np.round(r, 4)) for r in standardised.numpy()}
    assert all(tuple(np.round(r, 4)) in rows for r in val.tensors[0].numpy())  # the stored statistics reproduce x
    assert info.feature_names == list(bunch.feature_names) and info.class_names is None


def test_dataset_info_round_trips_and_old_records_still_read():
    info = load_dataset("digits")[2]
    assert DatasetInfo.from_dict(info.to_dict()) == info
    old = {"task": "classification", "num_classes": 10, "in_channels": 1, "image_size": 8, "num_features": None,
           "name": "digits", "target_mean": 0.0, "target_std": 1.0}  # written before mean / std were recorded
    assert DatasetInfo.from_dict({**old, "from_the_future": 1}).mean is None
    # a checkpoint header: network sizes from the architecture, the rest from the recorded data set
    spec = {"arch": {"arch": "digits_cnn", "kwargs": {"num_classes": 10, "in_channels": 1, "image_size": 8}},
            "metadata": {"dataset": info.to_dict()}}
    assert DatasetInfo.from_checkpoint(spec) == info
    stored = {"mean": [0.5], "std": [0.25], "class_names": list("abcdefghij")}  # by autobayes convert
    converted = {"arch": spec["arch"], "metadata": {"preprocessing": stored}}
    got = DatasetInfo.from_checkpoint(converted)
    assert (got.mean, got.std, got.class_names[:2], got.task, got.name) == ([0.5], [0.25], ["a", "b"], "classification", "")
    bare = DatasetInfo.from_checkpoint({"arch": spec["arch"]})
    assert (bare.mean, bare.in_channels, bare.image_size) == (None, 1, 8)


@pytest.mark.parametrize("mean,std,fragment", [
    ([float("nan")], [1.0], "finite"),
    ([0.5], [float("inf")], "finite"),
    ([0.1, 0.2, 0.3], [1.0], "1 value per channel (1 for this model), got 3"),
    ([0.5], [0.0], "> 0"),
    ([0.5], None, "give both"),
])
def test_check_normalisation_rejects_bad_values(mean, std, fragment):
    with pytest.raises(ConfigError) as err:
        check_normalisation(mean, std, 1, names=("--mean", "--std"))
    assert fragment in str(err.value)
    assert check_normalisation([0.5], [0.25, 0.5, 1.0], 3) == ([0.5, 0.5, 0.5], [0.25, 0.5, 1.0])


# ---------------------------------------------------------------------- ImageFolder: channels and native size
def _folder(root, mode, sizes, per_class=4):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            w, h = sizes[(c * per_class + i) % len(sizes)]
            shape = (h, w) if mode == "L" else (h, w, 3)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode).save(root / cls / f"{i}.png")
    return root


def test_image_folder_keeps_grayscale_and_native_size(tmp_path):
    root = _folder(tmp_path / "gray", "L", [(8, 8)])
    train, val, info = load_dataset(f"imagefolder:{root}", val_fraction=0.25)
    assert (info.in_channels, info.image_size, info.class_names) == (1, 8, ["a", "b"])  # not 3x64x64
    assert info.mean == [0.5] and info.std == [0.5]
    x, _ = train[0]
    assert x.shape == (1, 8, 8)
    # the pixels themselves, not resampled: (x * 0.5 + 0.5) * 255 gives the PNG's integers back
    from PIL import Image

    path = train.dataset.samples[train.indices[0]][0]
    np.testing.assert_allclose(((x[0] * 0.5 + 0.5) * 255).numpy(), np.asarray(Image.open(path), dtype=np.float32), atol=1e-3)
    # the checkpoint's choices win: RGB, another size, its own normalisation
    _, val, info = load_dataset(str(root), val_fraction=0.25, in_channels=3, image_size=16, mean=[0.1], std=[0.2])
    assert val[0][0].shape == (3, 16, 16) and info.mean == [0.1, 0.1, 0.1]


def test_image_folder_rgb_and_mixed_sizes(tmp_path):
    rgb = _folder(tmp_path / "rgb", "RGB", [(10, 10)])
    assert load_dataset(f"imagefolder:{rgb}", val_fraction=0.25)[2].in_channels == 3
    gray_read = load_dataset(f"imagefolder:{rgb}", val_fraction=0.25, in_channels=1)[0][0][0]
    assert gray_read.shape == (1, 10, 10)
    mixed = _folder(tmp_path / "mixed", "L", [(8, 8), (12, 10)])
    with pytest.raises(ConfigError, match=r"do not share one square size .*image_size=N"):
        load_dataset(f"imagefolder:{mixed}", val_fraction=0.25)
    assert load_dataset(f"imagefolder:{mixed}", val_fraction=0.25, image_size=8)[0][0][0].shape == (1, 8, 8)
    with pytest.raises(ConfigError, match="apply to imagefolder"):
        load_dataset("digits", mean=[0.5], std=[0.5])
    with pytest.raises(ConfigError, match="finite"):
        load_dataset(f"imagefolder:{mixed}", image_size=8, mean=[float("nan")], std=[1.0])
