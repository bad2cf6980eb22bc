"""Start-up time of ``import autobayes`` and ``python -m autobayes --help``: this checkout against another one.

Each measurement is a fresh interpreter. The two checkouts run alternately (ABBA order), so a machine whose load
drifts during the run affects both alike; the script prints medians and the median of the paired ratios. Two
numbers per command: the wall time of the whole process (dominated by importing torch) and the time spent in
autobayes' own modules (the ``self`` column of ``python -X importtime``, summed over ``autobayes.*``).

    python benchmarks/import_time.py --baseline /path/to/other/checkout [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

HERE = Path(__file__).resolve().parent.parent
COMMANDS = {"import autobayes": ["-c", "import autobayes"], "python -m autobayes --help": ["-m", "autobayes", "--help"]}


def measure(checkout: Path, args: List[str]) -> Tuple[float, float]:
    """``(wall seconds, seconds in autobayes' own modules)`` of one fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS="1")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", *args], env=env, cwd=checkout,
                            capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    own = 0
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            self_us, _, name = line[len("import time:"):].split("|")
            if name.strip().startswith("autobayes"):
                own += int(self_us)
    return wall, own / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of autobayes")
    parser.add_argument("--repeats", type=int, default=15)
    a = parser.parse_args()
    checkouts = {"this": HERE, "baseline": a.baseline.resolve()}
    for label, args in COMMANDS.items():
        runs: Dict[str, List[Tuple[float, float]]] = {"this": [], "baseline": []}
        for i in range(a.repeats):
            order = ["this", "baseline"] if i % 2 == 0 else ["baseline", "this"]
            for key in order:
                runs[key].append(measure(checkouts[key], args))
        print(f"{label}  ({a.repeats} runs each, alternating)")
        for what, idx in (("wall", 0), ("autobayes' own modules", 1)):
            this = [r[idx] for r in runs["this"]]
            base = [r[idx] for r in runs["baseline"]]
            ratio = statistics.median(t / b for t, b in zip(this, base))
            print(f"  {what:24s} this {statistics.median(this):7.3f} s   baseline {statistics.median(base):7.3f} s   "
                  f"median ratio this/baseline {ratio:.2f}")


if __name__ == "__main__":
    main()
