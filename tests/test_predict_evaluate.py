"""``autobayes predict`` / ``evaluate`` / ``convert`` use what checkpoints record about their data.

Trained checkpoints carry the input normalisation, class names, task, feature and target standardisation of
their data set; predict on PNGs / CSV rows and evaluate on regression, tabular and ImageFolder data use them.
The networks are trained for 2 epochs on scikit-learn's digits / diabetes / breast_cancer (a few seconds each).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import autobayes
from autobayes.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(tmp_path_factory, arch: str, data: str, seed: int = 0) -> Path:
    out = tmp_path_factory.mktemp(data) / "run"
    autobayes.train(arch, data, epochs=2, seed=seed, out_dir=out, progress=False, n_test=5)
    return out / "best.safetensors"


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    return _train(tmp_path_factory, "digits_cnn", "digits")


@pytest.fixture(scope="module")
def diabetes_ckpt(tmp_path_factory):
    return _train(tmp_path_factory, "fcnet", "diabetes", seed=1)  # a split other than evaluate's default seed 0


@pytest.fixture(scope="module")
def cancer_ckpt(tmp_path_factory):
    return _train(tmp_path_factory, "fcnet", "breast_cancer")


def _val_indices(n_rows: int, labels, seed: int = 0) -> np.ndarray:
    """The validation rows of autobayes.data.load_dataset (a seeded, stratified for labels, 20% split)."""
    from sklearn.model_selection import train_test_split

    _, va = train_test_split(np.arange(n_rows), test_size=0.2, random_state=seed, stratify=labels)
    return np.sort(va)


def _digits_validation():
    from sklearn.datasets import load_digits

    digits = load_digits()
    va = _val_indices(len(digits.target), digits.target)
    return digits.images[va], digits.target[va]


def _write_pngs(folder: Path, images, labels, by_class: bool = False) -> None:
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels)):
        target = folder / str(label) if by_class else folder
        target.mkdir(parents=True, exist_ok=True)
        pixels = (image / 16.0 * 255).round().astype(np.uint8)  # 0..255 grayscale, 8x8
        Image.fromarray(pixels, mode="L").save(target / f"{i:03d}.png")  # named in validation order


def _read_csv(path: Path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _one_error_line(err: str, *fragments: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert "Traceback" not in err and lines[-1].startswith("autobayes: error:"), err
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


# ---------------------------------------------------------------------- images: the stored normalisation
def test_predict_on_validation_pngs_matches_evaluate_without_mean_std(digits_ckpt, tmp_path, capsys):
    """With no --mean / --std, predict normalises PNGs as the checkpoint records (unnormalised, 16/50 were right).

    evaluate (the tensors) and predict (the PNGs) draw the same posterior samples: seed 0, the same batches of 256
    in the same order. They differ only by the PNGs' 8-bit quantisation (at most 0.5/255 per pixel, 0.005 after
    standardisation), which can flip only an example at a near-tie between two classes: we allow 3%.
    """
    images, labels = _digits_validation()
    _write_pngs(tmp_path / "pngs", images, labels)
    assert main(["evaluate", str(digits_ckpt), "--out", str(tmp_path / "ev"), "--n-samples", "10"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8  # the network learned the digits: a wrong preprocessing shows
    capsys.readouterr()
    assert main(["predict", str(digits_ckpt), str(tmp_path / "pngs"), "-o", str(tmp_path / "p.csv"),
                 "--n-samples", "10"]) == 0
    assert "warning" not in capsys.readouterr().err  # nothing to warn about: the normalisation is stored
    rows = _read_csv(tmp_path / "p.csv")
    assert [Path(r["path"]).name for r in rows] == [f"{i:03d}.png" for i in range(len(labels))]
    png_classes = np.array([int(r["class"]) for r in rows])
    tensor_classes = np.array([int(r["predicted"]) for r in _read_csv(tmp_path / "ev" / "predictions.csv")])
    assert np.mean(png_classes == tensor_classes) >= 0.97
    assert abs(np.mean(png_classes == labels) - metrics["accuracy"]) <= 0.03
    assert {r["class_name"] for r in rows} <= {str(i) for i in range(10)}


def _rewrite_metadata(src: Path, dst: Path, edit) -> Path:
    """A copy of a checkpoint whose JSON header's metadata went through ``edit`` (e.g. an older layout)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as fh:
        header = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    spec = json.loads(header["autobayes"])
    edit(spec["metadata"])
    save_file(tensors, str(dst), metadata={**header, "autobayes": json.dumps(spec)})
    return dst


def test_old_checkpoint_without_normalisation_still_predicts_with_the_warning(digits_ckpt, tmp_path, capsys):
    def strip(metadata):  # the dataset record autobayes train wrote before this change
        for key in ("mean", "std", "class_names", "feature_mean", "feature_std", "feature_names", "split_seed",
                    "val_fraction"):
            metadata["dataset"].pop(key)

    old = _rewrite_metadata(digits_ckpt, tmp_path / "old.safetensors", strip)
    images, labels = _digits_validation()
    _write_pngs(tmp_path / "pngs", images[:5], labels[:5])
    assert main(["predict", str(old), str(tmp_path / "pngs"), "-o", str(tmp_path / "p.csv"), "--n-samples", "2"]) == 0
    assert "no input normalisation given" in capsys.readouterr().err
    assert len(_read_csv(tmp_path / "p.csv")) == 5
    assert main(["inspect", str(old)]) == 0
    assert "input normalisation not recorded" in capsys.readouterr().out
    assert main(["evaluate", str(old), "--out", str(tmp_path / "ev"), "--n-samples", "2"]) == 0  # digits, seed 0


@pytest.mark.parametrize("flags,fragments", [
    (["--mean", "nan", "--std", "0.3"], ["--mean values must be finite"]),
    (["--mean", "0.3", "--std", "inf"], ["--std values must be finite"]),
    (["--mean", "0.1", "0.2", "0.3", "--std", "0.3"], ["--mean needs 1 value per channel (1 for this model), got 3"]),
    (["--mean", "0.3"], ["--mean needs --std too"]),
])
def test_predict_and_convert_reject_bad_normalisation(digits_ckpt, tmp_path, capsys, flags, fragments):
    """predict and convert refuse a non-finite --mean / --std (it wrote nan probabilities), one without the other,
    and a count the network's channels do not take (saying how many they take, not "--mean needs 1 or 1 values");
    nothing is written."""
    from autobayes.models import build_model

    image = tmp_path / "x.png"
    _write_pngs(tmp_path, *[a[:1] for a in _digits_validation()])
    (tmp_path / "000.png").rename(image)
    assert main(["predict", str(digits_ckpt), str(image), "-o", str(tmp_path / "p.csv"), *flags]) == 2
    _one_error_line(capsys.readouterr().err, *fragments)
    source = tmp_path / "det.pt"
    torch.save(build_model("digits_cnn", num_classes=10, in_channels=1, image_size=8).state_dict(), source)
    assert main(["convert", str(source), "-o", str(tmp_path / "c.safetensors"), "--arch", "digits_cnn",
                 "--in-channels", "1", "--image-size", "8", "--quiet", *flags]) == 2
    _one_error_line(capsys.readouterr().err, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.pt", "x.png"]


def test_convert_stores_normalisation_and_class_names_that_predict_and_inspect_use(tmp_path, capsys):
    from autobayes.models import build_model

    source = tmp_path / "det.pt"
    torch.save(build_model("digits_cnn", num_classes=3, in_channels=1, image_size=8).state_dict(), source)
    out = tmp_path / "bnn.safetensors"
    names = ["cat", "dog", "eel"]
    assert main(["convert", str(source), "-o", str(out), "--arch", "digits_cnn", "--num-classes", "3",
                 "--in-channels", "1", "--image-size", "8", "--quiet", "--mean", "0.25", "--std", "0.5",
                 "--class-names", *names]) == 0
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "normalised as (x - [0.25]) / [0.5]" in text and "cat, dog, eel" in text
    _write_pngs(tmp_path / "pngs", *[a[:4] for a in _digits_validation()])
    assert main(["predict", str(out), str(tmp_path / "pngs"), "-o", str(tmp_path / "p.csv"), "--n-samples", "2"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert {r["class_name"] for r in _read_csv(tmp_path / "p.csv")} <= set(names)
    assert main(["convert", str(source), "-o", str(tmp_path / "x.safetensors"), "--arch", "digits_cnn",
                 "--num-classes", "3", "--in-channels", "1", "--image-size", "8", "--class-names", "a", "b"]) == 2
    _one_error_line(capsys.readouterr().err, "--class-names gives 2 names for 3 classes")


# ---------------------------------------------------------------------- regression and tabular checkpoints
def _diabetes_validation(seed: int):
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    va = _val_indices(len(bunch.target), None, seed)
    return bunch, va


def test_evaluate_regression_in_original_units_on_the_training_split(diabetes_ckpt, tmp_path, capsys):
    """evaluate reports a regression checkpoint in the targets' original units (it said it supports classification
    only)."""
    out = tmp_path / "ev"
    assert main(["evaluate", str(diabetes_ckpt), "--out", str(out), "--n-samples", "20"]) == 0
    table = capsys.readouterr().out
    assert "RMSE" in table and "coverage of the 95% intervals" in table
    assert sorted(p.name for p in out.iterdir()) == sorted(["metrics.json", "predictions.csv", "predicted_vs_true.png",
                                                            "interval_coverage.png"])
    m = json.loads((out / "metrics.json").read_text())
    bunch, va = _diabetes_validation(seed=1)  # the split the network was trained with (recorded), not seed 0
    rows = _read_csv(out / "predictions.csv")
    np.testing.assert_allclose(sorted(float(r["target"]) for r in rows), sorted(bunch.target[va]), atol=1e-3)
    assert {r["units"] for r in rows} == {"original"} and m["n_examples"] == len(va)

    # the same numbers computed by hand from the network's standardised outputs (same seed, same single batch)
    bnn = autobayes.load(diabetes_ckpt)
    spec = bnn.autobayes_checkpoint["metadata"]
    t_mean, t_std = spec["dataset"]["target_mean"], spec["dataset"]["target_std"]
    _, val_set, _ = autobayes.load_dataset("diabetes", seed=1)
    torch.manual_seed(0)
    s = autobayes.predict(bnn, torch.utils.data.DataLoader(val_set, batch_size=256), n_samples=20,
                          task="regression", progress=False)
    mean = s.mean.double().reshape(-1) * t_std + t_mean
    var = (s.std.double().reshape(-1) ** 2 + spec["likelihood"]["noise_variance"]) * t_std ** 2
    y = torch.tensor(bunch.target[va], dtype=torch.float64)
    np.testing.assert_allclose([float(r["mean"]) for r in rows], mean.numpy(), rtol=1e-5)
    assert m["rmse"] == pytest.approx(float(((mean - y) ** 2).mean().sqrt()), rel=1e-5)
    assert m["rmse"] == pytest.approx(m["rmse_standardised"] * t_std, rel=1e-6)
    nll = float((0.5 * (torch.log(2 * torch.pi * var) + (y - mean) ** 2 / var)).mean())
    assert m["nll"] == pytest.approx(nll, rel=1e-5)
    assert m["nll"] == pytest.approx(m["nll_standardised"] + np.log(t_std), rel=1e-6)  # a change of units
    assert m["noise_std"] == pytest.approx(np.sqrt(spec["likelihood"]["noise_variance"]) * t_std, rel=1e-6)
    half = 1.959964 * var.sqrt()
    assert m["interval_coverage"] == pytest.approx(float(((y - mean).abs() <= half).double().mean()), abs=1e-9)
    assert m["r2"] == pytest.approx(1 - float(((y - mean) ** 2).sum() / ((y - y.mean()) ** 2).sum()), rel=1e-6)
    assert main(["evaluate", str(diabetes_ckpt), "--out", str(tmp_path / "o"), "--ood-data", "digits"]) == 2


def _write_feature_csv(path: Path, bunch, rows, header=True, order=None, extra=True) -> None:
    names = list(bunch.feature_names)
    order = list(range(len(names))) if order is None else order
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        if header:
            writer.writerow((["id"] if extra else []) + [names[j] for j in order] + (["target"] if extra else []))
        for i in rows:
            values = [repr(float(bunch.data[i, j])) for j in order]
            writer.writerow(([f"p{i}"] if extra else []) + values + ([bunch.target[i]] if extra else []))


def test_predict_csv_rows_of_a_regression_checkpoint(diabetes_ckpt, tmp_path, capsys):
    """Raw feature rows in, standardised as in training; predictions in the targets' original units out."""
    bunch, va = _diabetes_validation(seed=1)
    assert main(["evaluate", str(diabetes_ckpt), "--out", str(tmp_path / "ev"), "--n-samples", "20"]) == 0
    expected = [float(r["mean"]) for r in _read_csv(tmp_path / "ev" / "predictions.csv")]
    _write_feature_csv(tmp_path / "named.csv", bunch, va)  # header, an id and a target column besides the features
    _write_feature_csv(tmp_path / "plain.csv", bunch, va, header=False, extra=False)
    for name in ("named.csv", "plain.csv"):
        out = tmp_path / f"p_{name}"
        assert main(["predict", str(diabetes_ckpt), str(tmp_path / name), "-o", str(out), "--n-samples", "20"]) == 0
        rows = _read_csv(out)
        assert [int(r["row"]) for r in rows] == list(range(1, len(va) + 1)) and {r["units"] for r in rows} == {"original"}
        # same draws (seed 0, one batch): only float32 rounding of the parsed inputs differs (targets ~150)
        np.testing.assert_allclose([float(r["mean"]) for r in rows], expected, atol=1e-2)
        for r in rows:
            assert float(r["interval_lower"]) < float(r["mean"]) < float(r["interval_upper"])
            assert float(r["std"]) > float(r["epistemic_std"]) > 0  # the noise is part of the predictive
    capsys.readouterr()
    _write_feature_csv(tmp_path / "short.csv", bunch, va[:3], order=list(range(9)))
    assert main(["predict", str(diabetes_ckpt), str(tmp_path / "short.csv"), "-o", str(tmp_path / "s.csv")]) == 1
    _one_error_line(capsys.readouterr().err, "takes 10 feature columns", "'s6'")
    for flags, fragment in ((["--mean", "0.5", "--std", "1"], "drop --mean"), (["--class-names", "a"], "regression")):
        assert main(["predict", str(diabetes_ckpt), str(tmp_path / "named.csv"), "-o", str(tmp_path / "s.csv"),
                     *flags]) == 2
        _one_error_line(capsys.readouterr().err, fragment)


def test_tabular_classification_evaluate_and_predict(cancer_ckpt, tmp_path, capsys):
    """evaluate and predict read a tabular classifier's data (predict failed with "has no image_size")."""
    from sklearn.datasets import load_breast_cancer

    assert main(["evaluate", str(cancer_ckpt), "--out", str(tmp_path / "ev"), "--n-samples", "10"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["n_examples"] == 114 and m["accuracy"] > 0.85
    expected = np.array([int(r["predicted"]) for r in _read_csv(tmp_path / "ev" / "predictions.csv")])
    bunch = load_breast_cancer()
    va = _val_indices(len(bunch.target), bunch.target)
    order = list(range(30))[::-1]  # columns found by name, whatever their order
    _write_feature_csv(tmp_path / "rows.csv", bunch, va, order=order)
    capsys.readouterr()
    assert main(["predict", str(cancer_ckpt), str(tmp_path / "rows.csv"), "-o", str(tmp_path / "p.csv"),
                 "--n-samples", "10"]) == 0
    assert "warning" not in capsys.readouterr().err
    rows = _read_csv(tmp_path / "p.csv")
    got = np.array([int(r["class"]) for r in rows])
    # same draws as evaluate (seed 0, one batch of 114): only float32 rounding of the inputs differs
    assert np.mean(got == expected) >= 0.98
    assert {r["class_name"] for r in rows} <= {"malignant", "benign"}
    (tmp_path / "images").mkdir()  # outputs never go inside an input folder
    assert main(["predict", str(cancer_ckpt), str(tmp_path / "images"), "-o", str(tmp_path / "q.csv")]) == 1
    _one_error_line(capsys.readouterr().err, "takes rows of 30 features, not images")


# ---------------------------------------------------------------------- ImageFolder and image folders
def test_evaluate_on_a_grayscale_image_folder(digits_ckpt, tmp_path, capsys):
    """A grayscale ImageFolder is read as grayscale at its own size (it was read as RGB and resized to 64 px: "has
    3x8x8 images but the network takes 1x8x8"). The folder holds the validation PNGs (as train/ and val/); evaluate on the tensors
    and on the folder differ by the PNGs' quantisation and by the order of the examples (so by the draws): an
    example changes class only near a tie, we allow 3 points of accuracy."""
    images, labels = _digits_validation()
    for split in ("train", "val"):
        _write_pngs(tmp_path / "folder" / split, images, labels, by_class=True)
    assert main(["evaluate", str(digits_ckpt), "--out", str(tmp_path / "ev"), "--n-samples", "10"]) == 0
    reference = json.loads((tmp_path / "ev" / "metrics.json").read_text())["accuracy"]
    capsys.readouterr()
    assert main(["evaluate", str(digits_ckpt), "--data", f"imagefolder:{tmp_path / 'folder'}", "--n-samples", "10",
                 "--out", str(tmp_path / "ev_folder")]) == 0
    assert "warning" not in capsys.readouterr().err  # read with the checkpoint's normalisation
    m = json.loads((tmp_path / "ev_folder" / "metrics.json").read_text())
    assert m["n_examples"] == len(labels) and abs(m["accuracy"] - reference) <= 0.03


def test_predict_skip_bad_and_resized_images(digits_ckpt, tmp_path, capsys):
    from PIL import Image

    images, labels = _digits_validation()
    folder = tmp_path / "pngs"
    _write_pngs(folder, images[:4], labels[:4])
    (folder / "bad.png").write_bytes(b"\x89PNG not really an image")
    whole = (folder / "000.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 2])  # a truncated file: its header reads fine
    Image.fromarray((images[4] / 16 * 255).astype(np.uint8), mode="L").resize((16, 16)).save(folder / "big.png")
    out = tmp_path / "p.csv"
    assert main(["predict", str(digits_ckpt), str(folder), "-o", str(out), "--n-samples", "2"]) == 1
    _one_error_line(capsys.readouterr().err, "cannot read image", "bad.png", "--skip-bad")
    assert not out.exists()
    assert main(["predict", str(digits_ckpt), str(folder), "-o", str(out), "--n-samples", "2", "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "skipped 2 unreadable image(s)" in captured.err and "bad.png" in captured.err and "cut.png" in captured.err
    assert "1 image(s) resized from 16x16 to 8x8" in captured.out  # the network's input size
    assert sorted(Path(r["path"]).name for r in _read_csv(out)) == ["000.png", "001.png", "002.png", "003.png", "big.png"]
    for name in ("bad.png", "cut.png"):
        (folder / name).unlink()
    (folder / "000.png").write_bytes(b"")
    (folder / "001.png").write_bytes(b"")
    for p in sorted(folder.iterdir())[2:]:
        p.write_bytes(b"junk")
    assert main(["predict", str(digits_ckpt), str(folder), "-o", str(out), "--force", "--skip-bad"]) == 1
    _one_error_line(capsys.readouterr().err, "none of the 5 images could be read")
