"""Run folders: `autobayes train --out DIR` never loses a finished run. A folder holding a run
needs --force (replace it: the old run's files go first, so old and new never mix) or --resume (continue it);
the log always matches the checkpoint it sits beside. Budgets: fcnet with 8 hidden units on breast_cancer,
1-3 epochs (about a second each)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import autobayes
from autobayes.cli import main
from autobayes.errors import ConfigError
from autobayes.io import OutputExistsError
from autobayes.training import RUN_FILES, train

pytestmark = pytest.mark.usefixtures("one_thread")

TABULAR = ["--data", "breast_cancer", "--arch", "fcnet", "--model-arg", "hidden=[8]", "--n-test", "2",
           "--no-progress", "--device", "cpu"]


def _train(out_dir, epochs, **kwargs):
    return train("fcnet", "breast_cancer", epochs=epochs, model_kwargs={"hidden": [8]}, n_test=2, progress=False,
                 out_dir=out_dir, **kwargs)


def _snapshot(folder: Path):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _epochs_in_log(folder: Path):
    with open(folder / "log.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("autobayes: error: "), err
    return lines[0]


@pytest.fixture()
def finished_run(tmp_path):
    """A finished 2-epoch run in tmp_path/run, plus a file of the user's that is not part of the run."""
    out = tmp_path / "run"
    _train(out, epochs=2)
    (out / "notes.txt").write_text("mine")
    return out


def test_a_finished_run_is_not_overwritten(finished_run, capsys):
    before = _snapshot(finished_run)
    assert main(["train", *TABULAR, "--epochs", "1", "--out", str(finished_run)]) == 1
    line = _one_line(capsys.readouterr().err)
    for fragment in (str(finished_run), "already holds a training run", "--force", "--resume", "another --out"):
        assert fragment in line, line
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        _train(finished_run, epochs=1)
    assert _snapshot(finished_run) == before  # not a byte changed


def test_force_replaces_the_run_and_keeps_other_files(finished_run, capsys):
    assert main(["train", *TABULAR, "--epochs", "1", "--out", str(finished_run), "--force"]) == 0
    assert _epochs_in_log(finished_run) == [1]  # no row of the old run
    for name in ("best.safetensors", "last.safetensors"):  # the old run's best (epoch 2) is gone too
        assert autobayes.load(finished_run / name).autobayes_checkpoint["metadata"]["epoch"] == 1
    assert (finished_run / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in finished_run.iterdir()) == sorted([*RUN_FILES, "notes.txt"])  # no temporaries


def test_overwrite_in_python_and_an_empty_or_foreign_folder(tmp_path):
    result = _train(tmp_path / "run", epochs=1)
    again = _train(tmp_path / "run", epochs=1, overwrite=True)
    assert [r["epoch"] for r in again.history] == [1] and result.out_dir == again.out_dir
    foreign = tmp_path / "mine"  # a folder with the user's own files only holds no run: it is used as is
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    _train(foreign, epochs=1)
    assert (foreign / "config.json").read_text() == "{}" and _epochs_in_log(foreign) == [1]


def test_resume_and_force_are_exclusive(finished_run, capsys):
    assert main(["train", *TABULAR, "--epochs", "3", "--out", str(finished_run), "--resume", "--force"]) == 2
    assert "pass one" in _one_line(capsys.readouterr().err)
    with pytest.raises(ConfigError, match="pass one"):
        _train(finished_run, epochs=3, resume=True, overwrite=True)


def test_resume_rewrites_the_log_from_the_checkpoint(finished_run):
    # A run killed after it appended epoch 3's row but before it saved epoch 3's resume state.
    with open(finished_run / "log.csv", "a", newline="") as f:
        f.write("3" + "," * 20 + "\n")
    result = _train(finished_run, epochs=3, resume=True)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert _epochs_in_log(finished_run) == [1, 2, 3]


def test_an_out_path_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "log.csv"
    target.write_text("precious")
    with pytest.raises(OutputExistsError, match="is a file, not a folder"):
        _train(target, epochs=1)
    assert target.read_text() == "precious"


def test_several_processes_check_the_folder_before_starting(finished_run):
    before = _snapshot(finished_run)
    with pytest.raises(OutputExistsError, match="already holds a training run"):  # raised before any spawn
        _train(finished_run, epochs=1, nproc=2)
    assert _snapshot(finished_run) == before
