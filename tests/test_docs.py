"""The documentation site: it builds with ``mkdocs build --strict``, and every code block in it runs as written.

* The site builds without a warning (a broken link or anchor, a reference that does not resolve, a missing
  included file fail ``--strict``), into a temporary folder, and the built pages fetch nothing from the network.
* Every name of ``autobayes.__all__`` has an entry (``::: autobayes.NAME``) in docs/reference.md, every command of
  the CLI has its generated flag table in docs/guides/cli.md, every script of examples/ has a gallery page
  that is in the navigation.
* Every ``python`` block of a page runs, the page's blocks in order in one namespace, in a fresh folder; every
  line of a ``bash`` block that starts with ``autobayes`` runs (through :func:`autobayes.cli.main`, exit code
  0), in page order in another fresh folder holding the files the commands assume (see tests/_doc_blocks.py).
  Lines that cannot run here are listed in :data:`NOT_RUN` with the reason; a line that is neither run nor
  listed fails, so a new command in the docs is tested as soon as it is written. All pages run in one
  subprocess (one import of torch) to keep the test short.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _doc_blocks import ROOT, blocks, command_lines

DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md"))

#: Documented command lines that are not run here, with the reason (matched by their start).
NOT_RUN = {
    "torchrun --nnodes 2": "several machines and the CIFAR-10 files in /data; the one-machine form (--nproc 2) "
                           "runs here, and tests/test_distributed.py runs torchrun-style ranks",
    "-m autobayes train --data cifar10": "the continuation of the torchrun line above",
    "autobayes train --nproc 2": "two spawned processes (~25 s of CPU): tests/test_distributed.py trains with "
                                 "nproc=2 end to end",
    "torchrun --standalone --nproc-per-node 2 scripts/bayes_trainer_fsdp.py": "two processes (~30 s of CPU; run by "
        "hand for the docs); tests/test_hf_fsdp.py runs BayesTrainer with these FSDP settings in two gloo ranks",
    "bash quickstart.sh": "creates .venv and trains (the quick start itself; CI runs bash run_tests.sh)",
    "bash run_tests.sh": "runs this test suite",
    "pip install -e .[dev]": "the development install (bash run_tests.sh makes it)",
    "OMP_NUM_THREADS=1 pytest": "runs this test suite",
    "python benchmarks/": "benchmarks take minutes (tests/test_quality_benchmark.py runs quality.py --quick)",
    "python examples/": "the gallery's examples: scripts/docs_gallery.py ran them for their pages (and "
                        "tests/test_examples.py, tests/test_lora.py run them)",
}

#: A ``python`` block that is only a snippet include (a gallery page's source, ``--8<-- "examples/..."``).
INCLUDE = re.compile(r'^--8<-- "[^"]+"\s*$')


def _page_code(page: Path):
    text = page.read_text()
    python = [b for b in blocks(text, "python") if not INCLUDE.match(b.strip())]
    commands = command_lines(text)
    return python, commands


def test_site_builds_strict_and_offline(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    site = tmp_path / "site"
    html = {p.relative_to(site).as_posix(): p.read_text() for p in site.rglob("*.html")}
    assert "reference.html" in html and "guides/cli.html" in html
    # nothing loaded from the network: no remote stylesheet, script, font or image (links to read are fine)
    remote = re.compile(r"""<(?:link|script|img)\b[^>]*(?:href|src)=["']https?://""")
    offenders = [name for name, text in html.items() if remote.search(text)]
    assert not offenders, f"pages that load something from the network: {offenders}"
    assert "fonts.googleapis" not in "".join(html.values())
    # the generated flag tables are in the page, e.g. train's --n-mc
    assert "<code>--n-mc</code>" in html["guides/cli.html"]


def test_every_public_name_has_a_reference_entry():
    import autobayes

    text = (DOCS / "reference.md").read_text()
    entries = re.findall(r"^::: autobayes\.(\w+)\s*$", text, flags=re.M)
    missing = sorted(set(autobayes.__all__) - set(entries))
    assert not missing, f"add '::: autobayes.NAME' to docs/reference.md for {missing}"
    extra = sorted(set(entries) - set(autobayes.__all__))
    assert not extra, f"docs/reference.md documents names outside autobayes.__all__: {extra}"


def test_every_command_has_its_flag_table():
    from autobayes.cli import COMMANDS

    text = (DOCS / "guides" / "cli.md").read_text()
    missing = [c for c in COMMANDS if f"<!-- cli: {c} -->" not in text]
    assert not missing, f"add '<!-- cli: COMMAND -->' to docs/guides/cli.md for {missing}"


def test_every_example_has_a_gallery_page_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    for script in sorted((ROOT / "examples").glob("*.py")):
        page = DOCS / "gallery" / f"{script.stem}.md"
        assert page.exists(), f"run: OMP_NUM_THREADS=1 python scripts/docs_gallery.py {script.stem}"
        assert f'--8<-- "examples/{script.name}"' in page.read_text()
        assert f"gallery/{script.stem}.md" in nav, f"add gallery/{script.stem}.md to the nav of mkdocs.yml"


@pytest.mark.slow
def test_every_code_block_runs_as_written(tmp_path):
    pages, skipped = [], []
    for page in PAGES:
        python, commands = _page_code(page)
        run = []
        for line in commands:
            if any(line.startswith(prefix) for prefix in NOT_RUN):
                skipped.append(line)
                continue
            assert line.startswith("autobayes "), f"{page}: a command this test does not know how to run: {line!r}"
            run.append(line)
        if python or run:
            pages.append({"page": page.relative_to(DOCS).as_posix(), "python": "\n\n".join(python), "commands": run})
    assert all(any(s.startswith(p) for s in skipped) for p in NOT_RUN), "a NOT_RUN entry matches no docs line"
    assert sum(bool(p["python"]) for p in pages) >= 8 and sum(len(p["commands"]) for p in pages) >= 10
    spec = tmp_path / "pages.json"
    spec.write_text(json.dumps(pages))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "_docs_runner.py"), str(spec), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    print(proc.stdout)  # one line per page with its time (pytest -s or -rP shows it)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
