"""The README is the front page: short, no release notes, its links resolve, and its code runs as written.

Every ``autobayes ...`` line of the README's ``bash`` blocks runs, in README order, in one fresh folder, as a
subprocess (``python -m autobayes``), and must exit 0; lines that cannot run here are listed in :data:`NOT_RUN`
with the reason, and a line that is neither run nor listed fails the test. The Python blocks run in README order
in one interpreter, in another fresh folder. Everything else the README used to hold lives in docs/ (whose code
tests/test_docs.py runs).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from _doc_blocks import ROOT, blocks, command_lines, prepare

README = ROOT / "README.md"

#: README command lines that are not run here, with the reason (matched by their start).
NOT_RUN = {
    "bash quickstart.sh": "creates .venv and trains (the quick start itself; CI runs bash run_tests.sh)",
    "bash run_tests.sh": "runs this test suite",
}


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def test_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 200, "the README is the front page: move details into docs/"
    assert not re.search(r"\bissue \d+|until this release", text, flags=re.I), "release notes go to CHANGELOG.md"
    for target in re.findall(r"\]\(((?:docs/|CHANGELOG)[^)#]*)", text):
        assert (ROOT / target).exists(), f"README links to a missing file: {target}"


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    prepare(tmp_path)
    ran, skipped = [], []
    for line in command_lines(README.read_text()):
        if any(line.startswith(prefix) for prefix in NOT_RUN):
            skipped.append(line)
            continue
        assert line.startswith("autobayes "), f"a README command this test does not know how to run: {line!r}"
        argv = [sys.executable, "-m", "autobayes", *shlex.split(line)[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"README command failed: {line}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        ran.append(line)
    assert len(ran) >= 3, ran
    assert all(any(s.startswith(p) for s in skipped) for p in NOT_RUN), "a NOT_RUN entry matches no README line"


@pytest.mark.slow
def test_readme_python_snippets_run_as_written(tmp_path):
    code = "\n\n".join(blocks(README.read_text(), "python"))
    script = tmp_path / "readme_snippets.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
