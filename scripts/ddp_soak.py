"""Soak test for :func:`autobayes.distributed.launch`: run a two-process workload many times, count failures.

A race at process-group teardown fails only some runs, so one passing pytest run says little. This runs
``distributed.launch`` ``--reps`` times with 2 gloo processes on the CPU (one thread each) and prints one line per
repetition and a summary. Workloads (``--workload``), both the workers of ``tests/test_distributed.py``:

* ``fixture`` (default): ``_ddp_worker``, the ``ddp_run`` fixture's DDP training (30 steps);
* ``teardown``: ``_leave_while_the_peer_is_in_a_collective``, the same race made wide: rank 0 leaves with
  collectives still in flight and tears down slowly while rank 1 completes them (~10 s a repetition).

Usage (from the repository root; each repetition takes several seconds, so run it in the background)::

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
from test_distributed import WORLD, _ddp_worker, _leave_while_the_peer_is_in_a_collective  # noqa: E402


def one_run(workload: str, steps: int) -> str:
    """One launch; ``""`` on success, else the error (and, for the fixture, which ranks wrote their results)."""
    with tempfile.TemporaryDirectory(prefix="ddp_soak_") as out:
        try:
            if workload == "teardown":
                result = distributed.launch(_leave_while_the_peer_is_in_a_collective, {"n_ops": 32}, WORLD,
                                            torch.device("cpu"), threads=1)
                return "" if result == "done" else f"launch returned {result!r}"
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
    parser.add_argument("--workload", choices=("fixture", "teardown"), default="fixture",
                        help="the ddp_run fixture's training (default), or the teardown race made wide")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, pid {os.getpid()}, {args.reps} repetitions of {WORLD} gloo ranks, "
          f"workload {args.workload}" + (f", {args.steps} steps" if args.workload == "fixture" else ""), flush=True)
    failures = 0
    start = time.perf_counter()
    for rep in range(1, args.reps + 1):
        t0 = time.perf_counter()
        error = one_run(args.workload, args.steps)
        failures += bool(error)
        print(f"rep {rep:3d}: {'FAIL ' + error if error else 'ok'} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"SUMMARY: {failures} failures in {args.reps} repetitions ({time.perf_counter() - start:.0f} s)",
          flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
