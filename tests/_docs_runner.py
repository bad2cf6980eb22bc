"""Run the docs pages' code blocks (called by tests/test_docs.py): ``python _docs_runner.py PAGES.json FOLDER``.

For each page: its ``python`` blocks, joined, run in a fresh namespace in ``FOLDER/<page>/python``; its
``autobayes`` command lines run in order through :func:`autobayes.cli.main` in ``FOLDER/<page>/commands``, a
copy of the files the commands assume (tests/_doc_blocks.py). Prints a line per page with its time; exits 1
after the first page that fails, with the traceback.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the load of a shared machine does not count)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _doc_blocks import prepare

    from autobayes.cli import main as cli

    spec, folder = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    files = folder / "_files"
    files.mkdir()
    prepare(files)
    for page in spec:
        start, cpu = time.perf_counter(), _cpu()
        where = folder / page["page"].replace("/", "_").removesuffix(".md")
        try:
            if page["commands"]:
                shutil.copytree(files, where / "commands")
                os.chdir(where / "commands")
                for line in page["commands"]:
                    try:
                        code = cli(shlex.split(line)[1:])
                    except SystemExit as exit_:
                        code = exit_.code
                    if code:
                        print(f"{page['page']}: command failed with exit code {code}: {line}")
                        return 1
            if page["python"]:
                (where / "python").mkdir(parents=True)
                os.chdir(where / "python")
                exec(compile(page["python"], f"<docs/{page['page']}>", "exec"), {"__name__": "__docs__"})
        except Exception:
            print(f"{page['page']}: failed")
            traceback.print_exc()
            return 1
        print(f"{page['page']}: ok in {time.perf_counter() - start:.1f} s ({_cpu() - cpu:.1f} s of CPU)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
