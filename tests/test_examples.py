"""The examples of issues 14 and 16 run end to end as their docstrings say (marker ``slow``; LoRA's example is
checked in tests/test_lora.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(script: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900, env={**__import__("os").environ, "OMP_NUM_THREADS": "1",
                                                       "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_gpt2_docstrings_example_converts_by_the_export_route_and_plots(tmp_path):
    out = _run("bayesian_gpt2_docstrings.py", "--quick", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert "mode=export" in out, out
    assert "Conv1D (functional)" in out and "tie: transformer.wte.weight = lm_head.weight: shared" in out, out
    assert (tmp_path / "run" / "token_uncertainty.png").stat().st_size > 10_000
    for line in ("real docstrings:", "shuffled"):
        assert line in out, out


def test_lstm_digits_example_trains_and_reports(tmp_path):
    out = _run("lstm_digits.py", "--epochs", "3", "--samples", "5", cwd=tmp_path)
    rows = {line[:34].strip(): line[34:].split() for line in out.splitlines() if line.startswith(("deterministic LSTM",
                                                                                                  "Bayesian LSTM"))}
    assert set(rows) == {"deterministic LSTM", "Bayesian LSTM, posterior mean", "Bayesian LSTM, 5 draws"}, out
    for name, (acc, nll, ece) in rows.items():
        assert float(acc) > 0.5, (name, out)  # 3 epochs: well above chance (0.1); 30 epochs give ~0.98


def test_hf_trainer_classifier_example_fine_tunes_and_saves_a_folder_autobayes_reads(tmp_path):
    out = _run("hf_trainer_classifier.py", "--quick", "--out", str(tmp_path / "run"), cwd=tmp_path)
    rows = {line.split(":")[0]: line for line in out.splitlines() if line.startswith(("deterministic", "Bayesian, "))}
    assert len(rows) == 3, out
    for line in rows.values():
        acc = float(line.split("acc ")[1].split()[0])
        assert acc > 0.45, out  # 5 families, the largest 39% of the docstrings: well above the majority class
    assert "mode=export" in out and "nll" in out and "kl_term" in out, out
    assert "posterior-mean outputs equal: True" in out, out
    assert "OOD AUROC" in out, out
    folder = tmp_path / "run" / "model"
    assert {"config.json", "model.safetensors", "autobayes.safetensors"} <= {p.name for p in folder.iterdir()}
    done = subprocess.run([sys.executable, "-m", "autobayes", "inspect", str(folder)], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0 and "BertForSequenceClassification" in done.stdout, done.stdout + done.stderr
