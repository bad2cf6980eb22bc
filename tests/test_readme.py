"""The README's commands and Python snippets, copied as written, run as written.

Every ``autobayes ...`` line of the README's ``bash`` blocks runs, in README order, in one fresh folder, as a
subprocess (``python -m autobayes``), and must exit 0. The files the README assumes the reader has (a trained
``resnet18.pt``, a folder ``images/``, ``rows.csv`` of diabetes features) are made first. The Python blocks run in
README order in one interpreter, in another fresh folder. Lines that cannot run on this machine are listed in
:data:`NOT_RUN` with the reason; a README line that is neither run nor listed fails the test, so a new command in
the README is tested as soon as it is written.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parent.parent / "README.md"

#: README command lines that are not run here, with the reason (matched by their start).
NOT_RUN = {
    "torchrun --nnodes 2": "several machines and the CIFAR-10 files in /data; the one-machine form "
                           "(--nproc 2) runs here, and tests/test_distributed.py runs torchrun-style ranks",
    "-m autobayes train --data cifar10": "the continuation of the torchrun line above",
    "bash quickstart.sh": "creates .venv and trains (the quick start itself; CI runs bash run_tests.sh)",
    "bash run_tests.sh": "runs this test suite",
    "pip install -e .[dev]": "the development install (bash run_tests.sh makes it)",
    "OMP_NUM_THREADS=1 pytest": "runs this test suite",
    "python benchmarks/import_time.py": "a benchmark against another checkout of the repository",
    "python benchmarks/quality.py": "the quality benchmark (minutes); tests/test_quality_benchmark.py runs --quick",
    "autobayes convert gpt2_dir/": "needs a save_pretrained folder of a transformers model (tests/test_hf_io.py "
                                   "converts one written from a small config)",
    "autobayes inspect gpt2_dir/": "the same save_pretrained folder (tests/test_hf_io.py inspects one)",
}


def _blocks(language: str):
    text = README.read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def _commands():
    lines = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).rstrip(" \\").strip()
            if line:
                lines.append(line)
    return lines


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(README.parent))
    return env


def _prepare(folder: Path) -> None:
    """What the README assumes the reader already has."""
    import numpy as np
    import torch
    import torchvision
    from PIL import Image
    from sklearn.datasets import load_diabetes

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), folder / "resnet18.pt")
    (folder / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), mode="RGB").save(folder / f"images/{i}.png")
    diabetes = load_diabetes()
    with open(folder / "rows.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(diabetes.feature_names)
        writer.writerows(diabetes.data[:5].tolist())


def test_readme_commands_run_as_written(tmp_path):
    _prepare(tmp_path)
    ran, skipped = [], []
    for line in _commands():
        if any(line.startswith(prefix) for prefix in NOT_RUN):
            skipped.append(line)
            continue
        assert line.startswith("autobayes "), f"a README command this test does not know how to run: {line!r}"
        argv = [sys.executable, "-m", "autobayes", *shlex.split(line)[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"README command failed: {line}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        ran.append(line)
    assert len(ran) >= 8, ran
    assert all(any(s.startswith(p) for s in skipped) for p in NOT_RUN), "a NOT_RUN entry matches no README line"


def test_readme_python_snippets_run_as_written(tmp_path):
    code = "\n\n".join(_blocks("python"))
    script = tmp_path / "readme_snippets.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
