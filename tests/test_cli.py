"""The ``autobayes`` command line: end to end on digits, help texts, and one test per kind of bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autobayes.cli import COMMANDS, build_parser, main
from autobayes.data import load_dataset
from autobayes.models import build_model

DIGITS = ["--arch", "digits_cnn", "--num-classes", "10", "--in-channels", "1", "--image-size", "8"]


def _digits_normalisation():
    """The pixel mean / std data.load_dataset('digits') standardises with (its training split, seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    tr, _ = train_test_split(np.arange(len(x)), test_size=0.2, random_state=0, stratify=digits.target)
    return float(x[tr].mean()), float(x[tr].std())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A deterministic digits CNN trained for a few seconds, saved as a DataParallel-style checkpoint."""
    torch.manual_seed(0)
    train_set, val_set, _ = load_dataset("digits")
    model = build_model("digits_cnn", num_classes=10, in_channels=1, image_size=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x_train, y_train = train_set.tensors
    for _ in range(10):  # ~60 steps of 256 images: about 97% validation accuracy
        order = torch.randperm(len(y_train))
        for i in range(0, len(order), 256):
            idx = order[i:i + 256]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
    model.eval()
    x_val, y_val = val_set.tensors
    with torch.no_grad():
        accuracy = float((model(x_val).argmax(1) == y_val).float().mean())
    folder = tmp_path_factory.mktemp("trained")
    path = folder / "digits_cnn.pt"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 10}, path)
    return {"path": path, "accuracy": accuracy, "model": model}


@pytest.fixture(scope="module")
def converted(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "digits_bnn.safetensors"
    mean, std = _digits_normalisation()
    code = main(["convert", str(trained["path"]), "-o", str(out), *DIGITS, "--posterior", "gaussian",
                 "--init-scale", "1e-3", "--prior-loc", "weights", "--mean", str(mean), "--std", str(std)])
    assert code == 0
    return out


def _snapshot(folder: Path):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(err: str, *fragments: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert "Traceback" not in err
    assert lines[-1].startswith("autobayes"), err
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


# ---------------------------------------------------------------------- end to end
def test_convert_evaluate_predict_end_to_end(trained, converted, tmp_path, capsys):
    assert trained["accuracy"] > 0.9  # the deterministic CNN learned the digits
    capsys.readouterr()

    # evaluate: a small posterior scale keeps the accuracy within 1 point of the deterministic model
    out_dir = tmp_path / "eval"
    assert main(["evaluate", str(converted), "--data", "digits", "--n-samples", "20", "--out", str(out_dir)]) == 0
    table = capsys.readouterr().out
    assert "accuracy" in table and "ECE" in table
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert abs(metrics["accuracy"] - trained["accuracy"]) <= 0.01
    assert metrics["n_examples"] == 360 and metrics["n_samples"] == 20
    with open(out_dir / "predictions.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 360
    for name in ("reliability.png", "confidence.png"):
        assert (out_dir / name).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out_dir.iterdir()) == ["confidence.png", "metrics.json", "predictions.csv", "reliability.png"]

    # predict on a folder of digit PNGs: one row per image
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = tmp_path / "pngs"
    (images / "sub").mkdir(parents=True)
    labels = {}
    for i in range(12):
        path = images / ("sub" if i % 3 == 0 else "") / f"digit_{i:02d}.png"
        Image.fromarray((digits.images[i] / 16.0 * 255).round().astype(np.uint8), mode="L").save(path)
        labels[str(path)] = int(digits.target[i])
    (images / "README.txt").write_text("not an image")
    csv_path = tmp_path / "predictions.csv"
    assert main(["predict", str(converted), str(images), "-o", str(csv_path), "--n-samples", "10"]) == 0
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    assert {"path", "class", "probability", "interval_lower", "interval_upper", "entropy", "mutual_information"} <= set(rows[0])
    for row in rows:
        assert float(row["interval_lower"]) <= float(row["probability"]) <= float(row["interval_upper"])
        assert float(row["mutual_information"]) >= 0
    correct = sum(int(r["class"]) == labels[r["path"]] for r in rows)
    assert correct >= 10  # preprocessing (stored normalisation) matches training


def test_ood_evaluation_adds_auroc_and_histogram(converted, tmp_path, capsys, monkeypatch):
    """--ood-data: noise images stand in for an out-of-distribution set (registered for this test only)."""
    import autobayes.data as data

    real = data.load_dataset

    def fake(name, *args, **kwargs):
        if name == "noise":
            g = torch.Generator().manual_seed(0)
            x = torch.randn(50, 1, 8, 8, generator=g) * 2
            ds = torch.utils.data.TensorDataset(x, torch.zeros(50, dtype=torch.long))
            return ds, ds, data.DatasetInfo("classification", 10, 1, 8, None, "noise")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(data, "load_dataset", fake)
    out_dir = tmp_path / "ood"
    code = main(["evaluate", str(converted), "--data", "digits", "--ood-data", "noise", "--n-samples", "10",
                 "--out", str(out_dir)])
    assert code == 0
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["ood_auroc_mutual_information"] <= 1.0
    assert (out_dir / "ood_histogram.png").exists()
    assert "AUROC MI vs noise" in capsys.readouterr().out


def test_inspect_architecture_and_checkpoint(converted, capsys):
    assert main(["inspect", "digits_cnn", "--in-channels", "1", "--image-size", "8", "--exclude", "0"]) == 0
    report = capsys.readouterr().out
    assert "autobayes conversion of" in report
    assert main(["inspect", "digits_cnn", "--in-channels", "1", "--image-size", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] in ("fx", "swap")
    assert main(["inspect", str(converted)]) == 0
    text = capsys.readouterr().out
    assert "digits_cnn" in text and "gaussian" in text and "converted_from" in text
    assert main(["inspect", str(converted), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "autobayes.bnn"


# ---------------------------------------------------------------------- help and entry points
@pytest.mark.parametrize("command", [c for c in COMMANDS if c in build_parser()._subparsers._group_actions[0].choices])
def test_every_subcommand_has_help_with_an_example(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"autobayes {command}" in out and "example" in out.lower()


def test_python_m_autobayes_help():
    result = subprocess.run([sys.executable, "-m", "autobayes", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in ("convert", "inspect", "predict", "evaluate"):
        assert command in result.stdout
    assert "Exit codes" in result.stdout


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "usage: autobayes" in capsys.readouterr().err


# ---------------------------------------------------------------------- bad inputs: one clear line, nothing written
def test_missing_source(tmp_path, capsys):
    code = main(["convert", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "out.safetensors"), *DIGITS])
    assert code == 1
    _one_error_line(capsys.readouterr().err, "nope.pt", "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_and_truncated_files(trained, converted, tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)  # a zip signature, then noise
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(converted.read_bytes()[:5000])
    cut_pt = tmp_path / "cut.pt"
    cut_pt.write_bytes(trained["path"].read_bytes()[:3000])
    before = _snapshot(tmp_path)

    assert main(["convert", str(garbage), "-o", str(tmp_path / "o.safetensors"), *DIGITS]) == 1
    _one_error_line(capsys.readouterr().err, "garbage.pt", "truncated or corrupt")
    assert main(["convert", str(cut_pt), "-o", str(tmp_path / "o.safetensors"), *DIGITS]) == 1
    _one_error_line(capsys.readouterr().err, "cut.pt", "truncated or corrupt")
    for command in (["inspect", str(truncated)],
                    ["predict", str(truncated), str(garbage), "-o", str(tmp_path / "p.csv")],
                    ["evaluate", str(truncated), "--data", "digits", "--out", str(tmp_path / "ev")]):
        assert main(command) == 1
        _one_error_line(capsys.readouterr().err, "truncated.safetensors", "truncated or corrupt")
    assert _snapshot(tmp_path) == before


def test_wrong_format(trained, tmp_path, capsys):
    text = tmp_path / "model.safetensors"
    text.write_text("definitely not tensors\n")
    before = _snapshot(tmp_path)
    assert main(["inspect", str(text)]) == 1
    _one_error_line(capsys.readouterr().err, "not an autobayes checkpoint")
    assert main(["convert", str(text), "-o", str(tmp_path / "o.safetensors"), *DIGITS]) == 1
    _one_error_line(capsys.readouterr().err, "neither a safetensors file nor a torch.save file")
    # a deterministic checkpoint where a Bayesian one is expected
    assert main(["predict", str(trained["path"]), str(text), "-o", str(tmp_path / "p.csv")]) == 1
    _one_error_line(capsys.readouterr().err, "torch.save file, not an autobayes checkpoint", "autobayes convert")
    assert _snapshot(tmp_path) == before


def test_unknown_architecture_and_options_are_usage_errors(trained, tmp_path, capsys):
    out = tmp_path / "o.safetensors"
    src = str(trained["path"])
    assert main(["convert", src, "-o", str(out), "--arch", "digits_cnm"]) == 2
    _one_error_line(capsys.readouterr().err, "unknown architecture 'digits_cnm'", "Did you mean 'digits_cnn'?")
    assert main(["inspect", "torchvision:resnet1800"]) == 2
    _one_error_line(capsys.readouterr().err, "unknown torchvision model 'resnet1800'")
    assert main(["convert", src, "-o", str(out), *DIGITS, "--posterior", "gausian"]) == 2
    _one_error_line(capsys.readouterr().err, "invalid choice: 'gausian'")
    assert main(["convert", src, "-o", str(out), *DIGITS, "--frobnicate"]) == 2
    _one_error_line(capsys.readouterr().err, "unrecognized arguments: --frobnicate")
    assert main(["convert", src, "-o", str(out), *DIGITS, "--prior-scale", "-1"]) == 2
    _one_error_line(capsys.readouterr().err, "prior_scale must be a finite number > 0, got -1.0")
    assert main(["convert", src, "-o", str(out), *DIGITS, "--override", 'fc={"prior_scal": 0.1}']) == 2
    _one_error_line(capsys.readouterr().err, "unknown option 'prior_scal'")
    assert not out.exists()


def test_existing_output_needs_force_and_input_is_never_overwritten(trained, tmp_path, capsys):
    src = tmp_path / "det.pt"
    src.write_bytes(trained["path"].read_bytes())
    out = tmp_path / "bnn.safetensors"
    out.write_bytes(b"precious")
    before = _snapshot(tmp_path)
    assert main(["convert", str(src), "-o", str(out), *DIGITS, "--quiet"]) == 1
    _one_error_line(capsys.readouterr().err, "bnn.safetensors", "already exists", "--force")
    assert main(["convert", str(src), "-o", str(src), *DIGITS, "--force", "--quiet"]) == 1
    _one_error_line(capsys.readouterr().err, "refusing to write", "it is the input")
    assert _snapshot(tmp_path) == before

    assert main(["convert", str(src), "-o", str(out), *DIGITS, "--force", "--quiet"]) == 0
    assert out.read_bytes()[:8] != b"precious" and src.read_bytes() == trained["path"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bnn.safetensors", "det.pt"]  # no temporary left


def test_checkpoint_that_does_not_match_the_architecture(trained, tmp_path, capsys):
    src = str(trained["path"])
    out = tmp_path / "o.safetensors"
    assert main(["convert", src, "-o", str(out), *DIGITS[:-6], "--num-classes", "7", "--in-channels", "1",
                 "--image-size", "8"]) == 1
    line = _one_error_line(capsys.readouterr().err, "does not match the architecture", "shape mismatches (2)")
    assert "8.weight (checkpoint [10, 64], model [7, 64])" in line and "--num-classes" in line
    assert main(["convert", src, "-o", str(out), "--arch", "fcnet", "--in-channels", "1", "--image-size", "8"]) == 1
    _one_error_line(capsys.readouterr().err, "missing keys", "unexpected keys")
    assert not out.exists()


def test_pickled_object_is_refused(trained, tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save(trained["model"], evil)  # a whole pickled nn.Module: loading it would import and run code
    before = _snapshot(tmp_path)
    assert main(["convert", str(evil), "-o", str(tmp_path / "o.safetensors"), *DIGITS]) == 1
    _one_error_line(capsys.readouterr().err, "refusing to load", "pickled Python objects")
    assert _snapshot(tmp_path) == before


def test_evaluate_needs_a_data_set_when_the_checkpoint_records_none(converted, tmp_path, capsys):
    assert main(["evaluate", str(converted), "--out", str(tmp_path / "ev")]) == 2
    _one_error_line(capsys.readouterr().err, "records no data set", "--data digits")
    assert not (tmp_path / "ev").exists()


def test_predict_warns_when_no_normalisation_is_known(tmp_path, capsys):
    from PIL import Image

    from autobayes.api import bayesify
    from autobayes.io import save

    bare = save(bayesify(build_model("digits_cnn", num_classes=10, in_channels=1, image_size=8)), tmp_path / "bare.safetensors")
    image = tmp_path / "blank.png"
    Image.new("L", (8, 8)).save(image)
    assert main(["predict", str(bare), str(image), "-o", str(tmp_path / "p.csv"), "--n-samples", "2"]) == 0
    assert "autobayes: warning: no input normalisation given" in capsys.readouterr().err
    assert main(["predict", str(bare), str(image), "-o", str(tmp_path / "q.csv"), "--n-samples", "2",
                 "--mean", "0.5", "--std", "0.25"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_bad_image_input(converted, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert main(["predict", str(converted), str(broken), "-o", str(tmp_path / "p.csv")]) == 1
    _one_error_line(capsys.readouterr().err, "cannot read image", "broken.png")
    assert main(["predict", str(converted), str(tmp_path / "missing_dir"), "-o", str(tmp_path / "p.csv")]) == 1
    _one_error_line(capsys.readouterr().err, "does not exist")
    assert not (tmp_path / "p.csv").exists()
