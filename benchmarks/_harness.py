"""Shared by the benchmark scripts: run one measurement in a fresh subprocess and read back its JSON line.

A fresh process per measurement makes the peak resident memory (``ru_maxrss``) attributable to that
measurement alone; on CUDA the workers report ``torch.cuda.max_memory_allocated`` instead.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from typing import Callable, Optional, Sequence, Tuple

import torch


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(script: str, args: Sequence[str], timeout: float) -> dict:
    """Run ``python script --worker ARGS...`` and parse the last stdout line as JSON.

    Returns ``{"skipped": reason}`` on a time-out or a failure (with the last line of stderr).
    """
    cmd = [sys.executable, script, "--worker", *map(str, args)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"skipped": f"> {timeout:.0f} s"}
    except subprocess.CalledProcessError as err:
        last = (err.stderr.strip().splitlines() or ["?"])[-1]
        return {"skipped": f"failed: {last[:70]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def report_ratio(name: str, num: Optional[float], den: Optional[float], target: float, higher_is_better: bool = False) -> None:
    """Print ``num / den`` against a target, with OK / MISS."""
    if num is None or den is None:
        print(f"  {name:64s} n/a")
        return
    r = num / den
    ok = r >= target if higher_is_better else r <= target
    print(f"  {name:64s} {r:8.2f}   target {'>=' if higher_is_better else '<='} {target:g}   {'OK' if ok else 'MISS'}")


def cross_entropy_step(optimizer: torch.optim.Optimizer, forward: Callable[[], Tuple[torch.Tensor, Optional[torch.Tensor]]],
                       targets: torch.Tensor, num_data: int, device: str) -> Callable[[], None]:
    """One training step as a closure: ``forward()`` returns ``(logits, kl)`` (``kl`` is ``None`` for a deterministic
    model), the loss is the cross-entropy (logits flattened to ``(-1, classes)``) plus ``kl / num_data``; on CUDA the
    step ends with a synchronisation, so that timing it times the work."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits, kl = forward()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        if kl is not None:
            loss = loss + kl / num_data
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step
