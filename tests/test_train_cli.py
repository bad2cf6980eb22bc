"""`autobayes train` as a new user meets it: one-line usage errors, "1 epoch", architecture suggestions;
fine-tuning a checkpoint with --init, module:factory from the current directory; a layer filter that matches
nothing; the loss shown as NLL + KL term. Budgets: fcnet with 8 hidden units on breast_cancer, 1-4 epochs (well under a second each)."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch
from torch import nn

import autobayes
from autobayes.cli import main
from autobayes.errors import ConfigError, DataMismatchError, UnknownNameError
from autobayes.models import build_model
from autobayes.training import CSV_FIELDS, train

pytestmark = pytest.mark.usefixtures("one_thread")

TABULAR = ["--data", "breast_cancer", "--n-test", "2", "--no-progress", "--device", "cpu"]
FCNET = ["--arch", "fcnet", "--model-arg", "hidden=[8]"]


def _one_line(err: str, *fragments: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("autobayes: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _fcnet(hidden=8, **kwargs):
    return train("fcnet", "breast_cancer", model_kwargs={"hidden": [hidden]}, n_test=2, progress=False, **kwargs)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 1-epoch Bayesian fcnet on breast_cancer (2 classes, 30 features)."""
    out = tmp_path_factory.mktemp("tabular_run")
    _fcnet(epochs=1, out_dir=out)
    return out / "best.safetensors"


# ---------------------------------------------------------------------- usage errors, wording
def test_usage_errors_are_one_line_that_names_the_help(capsys):
    assert main(["train", "--epochs", "x"]) == 2
    _one_line(capsys.readouterr().err, "argument --epochs: invalid int value: 'x'", "(see autobayes train --help)")
    assert main(["train", "--frobnicate"]) == 2
    _one_line(capsys.readouterr().err, "unrecognized arguments: --frobnicate", "(see autobayes train --help)")
    assert main(["trian"]) == 2
    _one_line(capsys.readouterr().err, "invalid choice: 'trian'", "(see autobayes --help)")


def test_long_options_are_never_abbreviated(capsys):
    # --init-s used to be read as --init-scale, and --init was "ambiguous"
    assert main(["train", *TABULAR, *FCNET, "--init-s", "1e-3", "--epochs", "1"]) == 2
    _one_line(capsys.readouterr().err, "unrecognized arguments: --init-s")


def test_one_epoch_is_singular(capsys):
    assert main(["train", *TABULAR, *FCNET, "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "fcnet on breast_cancer, rank1 posterior, 1 epoch," in out and "1 epochs" not in out


def test_unknown_architecture_suggests_torchvision_and_timm_names():
    with pytest.raises(UnknownNameError) as caught:
        build_model("resnet18", num_classes=10)
    message = str(caught.value)
    assert "'torchvision:resnet18'" in message and "'preact_resnet18'" in message
    assert ("'timm:resnet18'" in message) == (importlib.util.find_spec("timm") is not None)
    with pytest.raises(UnknownNameError, match=r"Did you mean 'digits_cnn'\?$"):  # built-in typos as before
        build_model("digits_cnm")


# ---------------------------------------------------------------------- --init, module:factory from cwd
def test_init_fine_tunes_the_checkpoint(checkpoint, tmp_path, capsys):
    out = tmp_path / "ft"
    # lr 1e-9: two epochs of Adam move each mean by at most ~2 * 18 steps * 1e-9, so the result is the
    # checkpoint's means (a fresh network would differ by O(0.1)).
    assert main(["train", *TABULAR, "--init", str(checkpoint), "--epochs", "2", "--lr", "1e-9", "--out", str(out)]) == 0
    assert "fcnet on breast_cancer, rank1 posterior, 2 epochs" in capsys.readouterr().out
    start, tuned = autobayes.load(checkpoint).state_dict(), autobayes.load(out / "last.safetensors").state_dict()
    assert start.keys() == tuned.keys()
    assert max(float((start[k] - tuned[k]).abs().max()) for k in start if k.endswith(".mu")) < 1e-6


def test_init_checks_the_checkpoint_fits_the_data(checkpoint, tmp_path, capsys):
    assert main(["train", "--data", "digits", "--init", str(checkpoint), "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "ft")]) == 1  # a failure (cli.py: 1), not a usage error (2)
    _one_line(capsys.readouterr().err, "built for num_classes=2", "'digits' has num_classes=10", "--num-classes 10")
    assert not (tmp_path / "ft").exists()
    # a module with the right number of classes but the wrong input width fails its trial forward, with a fix
    wrong_width = autobayes.bayesify(nn.Sequential(nn.Linear(7, 2)))
    with pytest.raises(DataMismatchError, match=r"does not accept the inputs of 'breast_cancer' \(one example of shape \[30\]"):
        train(wrong_width, "breast_cancer", epochs=1, progress=False)


def test_init_refuses_options_the_checkpoint_brings(checkpoint, capsys):
    assert main(["train", *TABULAR, "--init", str(checkpoint), "--posterior", "gaussian", "--arch", "fcnet"]) == 2
    _one_line(capsys.readouterr().err, "drop --arch, --posterior")
    assert main(["train", *TABULAR, "--arch", str(checkpoint)]) == 2
    _one_line(capsys.readouterr().err, f"use --init {checkpoint}")


def test_module_factory_is_found_in_the_current_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_tiny_models.py").write_text(
        "from torch import nn\n\n"
        "def make(num_features, num_classes):\n"
        "    return nn.Sequential(nn.Linear(num_features, 8), nn.ReLU(), nn.Linear(8, num_classes))\n"
    )
    monkeypatch.chdir(tmp_path)
    # as the `autobayes` console script starts: the current directory is not on sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_tiny_models", raising=False)
    assert main(["train", *TABULAR, "--arch", "my_tiny_models:make", "--epochs", "1"]) == 0
    assert "my_tiny_models:make on breast_cancer" in capsys.readouterr().out
    monkeypatch.delitem(sys.modules, "my_tiny_models", raising=False)


# ---------------------------------------------------------------------- a filter that matches nothing
def test_a_filter_that_converts_nothing_is_an_error(tmp_path, capsys):
    model = build_model("fcnet", num_classes=2, in_channels=1, image_size=None, num_features=30, hidden=[8])
    with pytest.raises(ConfigError) as caught:
        autobayes.bayesify(model, include=["nonexistent_layer*"])
    message = str(caught.value)
    for fragment in ("no layer of", "include=['nonexistent_layer*']", "(Linear)", "autobayes inspect",
                     "allow_deterministic=True"):
        assert fragment in message, message
    with pytest.raises(ConfigError, match="no layer autobayes converts"):
        autobayes.bayesify(nn.Sequential(nn.ReLU(), nn.Dropout()))
    with pytest.raises(ConfigError, match=r"BatchNorm1d layers are opt-in: convert them with layer_types=\['BatchNorm1d'\]"):
        autobayes.bayesify(nn.Sequential(nn.BatchNorm1d(3), nn.ReLU()))
    # inspect_model shows the empty result instead of raising, and says what bayesify would do
    report = autobayes.inspect_model(model, include=["nonexistent_layer*"])
    assert report.converted == [] and any("bayesify raises" in note for note in report.notes)

    out = tmp_path / "run"
    assert main(["train", *TABULAR, *FCNET, "--include", "nonexistent_layer*", "--epochs", "1",
                 "--out", str(out)]) == 2
    _one_line(capsys.readouterr().err, "no layer of", "nonexistent_layer*", "--allow-deterministic")
    assert not out.exists()


def test_a_deterministic_network_only_when_asked_and_then_said(tmp_path, capsys):
    assert main(["train", *TABULAR, *FCNET, "--include", "nonexistent_layer*", "--epochs", "1",
                 "--allow-deterministic", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "deterministic (no Bayesian layer)" in out and "posterior" not in out.split("\n")[1]
    bnn = autobayes.load(tmp_path / "run" / "last.safetensors")  # and it still loads
    assert bnn(torch.zeros(2, 30)).kl.item() == 0.0


# ---------------------------------------------------------------------- NLL and KL term apart
def test_log_keeps_its_columns_and_adds_the_kl_term_at_the_end():
    old = ("epoch", "train_loss", "train_acc", "train_avg_batch_time", "train_epoch_time", "n_mc_iter", "val_loss",
           "val_acc", "val_avg_batch_time", "val_epoch_time", "n_test_iter", "occupied_mb", "train_kl", "val_nll",
           "val_ece", "val_rmse", "val_r2", "train_nll", "beta", "lr")
    assert CSV_FIELDS[:len(old)] == old and CSV_FIELDS[len(old):] == ("train_kl_term",)
    result = _fcnet(epochs=1, beta="constant", beta_kwargs={"value": 0.5})
    row = result.final
    # loss = NLL + beta * KL / N per batch, each term a float32 (relative rounding ~1e-7): equal to 1e-6
    assert math.isclose(row["train_loss"], row["train_nll"] + row["train_kl_term"], rel_tol=1e-6)
    assert math.isclose(row["train_kl_term"], 0.5 * row["train_kl"] / result.criterion.num_data, rel_tol=1e-6)


def test_progress_and_summary_show_nll_and_kl_term(capsys):
    assert main(["train", "--data", "breast_cancer", *FCNET, "--n-test", "2", "--epochs", "1"]) == 0
    captured = capsys.readouterr()
    assert "kl_term=" in captured.err and "nll=" in captured.err  # the tqdm bar's postfix
    epoch_line = next(line for line in captured.out.splitlines() if line.startswith("epoch   1"))
    assert "= nll" in epoch_line and "+ kl term" in epoch_line
    assert "= NLL" in captured.out and "+ KL term" in captured.out and "beta * KL / N" in captured.out


