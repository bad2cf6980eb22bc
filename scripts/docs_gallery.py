"""Run every example once and write its gallery page: ``docs/gallery/<example>.md`` plus its figures.

    OMP_NUM_THREADS=1 python scripts/docs_gallery.py                       # every example, one at a time
    OMP_NUM_THREADS=1 python scripts/docs_gallery.py lstm_digits           # only these

Each example runs as a reader would run it (its quick mode where it has one), in a fresh folder, with one CPU
thread; its printed output and the PNG files it writes are committed under ``docs/gallery/``, and the page shows
the example's docstring, the command, the output, the figures and the source (included from ``examples/`` when
the site is built, so the source shown is always the file's). ``tests/test_docs.py`` checks that every script in
``examples/`` has a page here and in the site's navigation. Rerun this script after changing an example.
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GALLERY = ROOT / "docs" / "gallery"

#: The command line each example is shown (and run) with; ``runs/...`` is relative to the run's folder.
COMMANDS = {
    "train_classifier": ["--out", "runs/digits_api"],
    "regression_uncertainty": ["--out", "runs/regression"],
    "finetune_pretrained": [],
    "lora_finetune": [],
    "lstm_digits": [],
    "bayesian_gpt2_docstrings": ["--quick", "--out", "runs/gpt2_docstrings"],
    "hf_trainer_classifier": ["--quick", "--out", "runs/hf_trainer_classifier"],
}


def docstring(path: Path) -> tuple[str, str]:
    """The example's title (first docstring line) and the rest of its docstring as Markdown."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or path.stem
    title, _, body = doc.partition("\n")
    lines = [line for line in body.strip("\n").splitlines() if not line.strip().startswith("python examples/")]
    text = re.sub(r":(?:func|class|mod|data|meth|attr):`~?([^`]+)`", r"``\1``", "\n".join(lines))  # Sphinx roles
    return title.strip().rstrip("."), text.replace("``", "`").strip()


def run(stem: str) -> None:
    args = COMMANDS[stem]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(ROOT / "examples" / f"{stem}.py"), *args], cwd=tmp, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"examples/{stem}.py failed:\n{done.stderr[-3000:]}")
        figures = sorted(Path(tmp).rglob("*.png"))
        folder = GALLERY / stem
        shutil.rmtree(folder, ignore_errors=True)
        if figures:
            folder.mkdir(parents=True)
        for fig in figures:
            shutil.copy(fig, folder / fig.name)
    title, body = docstring(ROOT / "examples" / f"{stem}.py")
    command = " ".join(["python", f"examples/{stem}.py", *args])
    shown = "\n".join(f"![{fig.stem}]({stem}/{fig.name})" for fig in figures)
    page = [
        f"# {title}",
        "",
        f"Source: `examples/{stem}.py` (below).",
        "",
        body,
        "",
        "## Run it",
        "",
        "```bash",
        command,
        "```",
        "",
        "## Output",
        "",
        f"Captured by `scripts/docs_gallery.py` on {date.today().isoformat()} (Python {platform.python_version()}, "
        f"torch {torch.__version__.split('+')[0]}, one thread of a shared CPU: {seconds:.0f} s).",
        "",
        "```text",
        done.stdout.rstrip(),
        "```",
        "",
    ]
    if figures:
        page += ["## Figures" if len(figures) > 1 else "## Figure", "", shown, ""]
    page += ["## Source", "", "```python", f'--8<-- "examples/{stem}.py"', "```", ""]
    (GALLERY / f"{stem}.md").write_text("\n".join(page))
    print(f"{stem}: {seconds:.0f} s, {len(figures)} figure(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("examples", nargs="*", metavar="EXAMPLE",
                        help=f"examples to run (default: all): {', '.join(COMMANDS)}")
    names = parser.parse_args().examples or list(COMMANDS)
    unknown = [name for name in names if name not in COMMANDS]
    if unknown:
        parser.error(f"unknown examples {unknown}; choose from {', '.join(COMMANDS)}")
    missing = sorted(p.stem for p in (ROOT / "examples").glob("*.py") if p.stem not in COMMANDS)
    if missing:
        raise SystemExit(f"examples without a gallery command: {missing}; add them to COMMANDS in {__file__}")
    GALLERY.mkdir(parents=True, exist_ok=True)
    for stem in names:
        run(stem)


if __name__ == "__main__":
    main()
