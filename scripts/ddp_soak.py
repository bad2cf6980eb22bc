"""Soak test for :func:`autobayes.distributed.launch`: run the DDP test fixture's workload many times, count failures.

A race at process-group teardown fails only a few runs in twenty, so one passing pytest run says little. This runs
``distributed.launch(_ddp_worker, ...)`` -- the very worker of ``tests/test_distributed.py``'s ``ddp_run`` fixture,
2 gloo processes on the CPU, one thread each -- ``--reps`` times and prints one line per repetition and a summary.

Usage (from the repository root; each repetition takes a few seconds, so run it in the background)::

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/ddp_soak.py --reps 50 > soak.log 2>&1 &
    tail -f soak.log

Exit status 0 when every repetition succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the spawned ranks inherit sys.path and unpickle test_distributed._ddp_worker

from autobayes import distributed  # noqa: E402
from test_distributed import WORLD, _ddp_worker  # noqa: E402


def one_run(steps: int) -> str:
    """One launch; ``""`` on success, else the error (and a check that both ranks wrote their results)."""
    with tempfile.TemporaryDirectory(prefix="ddp_soak_") as out:
        try:
            distributed.launch(_ddp_worker, {"out_dir": out, "steps": steps}, WORLD, torch.device("cpu"), threads=1)
        except Exception as err:  # noqa: BLE001 -- counting every failure is the point
            written = sorted(p.name for p in Path(out).iterdir())
            return f"{type(err).__name__}: {str(err).strip().splitlines()[0]} (ranks' files written: {written})"
        missing = [r for r in range(WORLD) if not (Path(out) / f"rank{r}.pt").exists()]
        return f"launch returned but rank files {missing} are missing" if missing else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50, help="repetitions (default 50)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run, as the test fixture (30)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, pid {os.getpid()}, {args.reps} repetitions of {WORLD} gloo ranks, "
          f"{args.steps} steps", flush=True)
    failures = 0
    start = time.perf_counter()
    for rep in range(1, args.reps + 1):
        t0 = time.perf_counter()
        error = one_run(args.steps)
        failures += bool(error)
        print(f"rep {rep:3d}: {'FAIL ' + error if error else 'ok'} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"SUMMARY: {failures} failures in {args.reps} repetitions ({time.perf_counter() - start:.0f} s)",
          flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
