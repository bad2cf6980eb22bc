"""What a run reports: the ``log.csv`` columns and writers, the per-epoch line, the KL-term warning.

The loss is ``NLL + beta * KL / N`` per training example, and with few examples and many weights the KL term can
be most of it (digits: ~170 nats per example against an NLL below 0.5). The per-epoch line shows the two apart;
when the KL term is more than :data:`KL_WARN_RATIO` times the NLL for :data:`KL_WARN_EPOCHS` consecutive epochs,
:func:`warn_if_kl_dominates` warns once, with the usual fixes.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List

import torch

from ..data import DatasetInfo
from ..io import atomic_output

__all__ = ["CSV_FIELDS", "KL_WARN_RATIO", "KL_WARN_EPOCHS", "epoch_line", "write_log", "append_log", "json_row",
           "occupied_mb", "warn_if_kl_dominates"]

#: Columns of ``log.csv``: the paper repository's fields, then the validation NLL / ECE, regression metrics and
#: the ELBO terms. Empty cells where a field does not apply (accuracy of a regression run). ``train_kl`` is the
#: model's KL (unscaled), ``train_nll`` the mean NLL per example and ``train_kl_term`` the KL's share of
#: ``train_loss``, ``beta * KL / N`` per example (so ``train_loss = train_nll + train_kl_term``).
CSV_FIELDS = (
    "epoch", "train_loss", "train_acc", "train_avg_batch_time", "train_epoch_time", "n_mc_iter",
    "val_loss", "val_acc", "val_avg_batch_time", "val_epoch_time", "n_test_iter", "occupied_mb", "train_kl",
    "val_nll", "val_ece", "val_rmse", "val_r2", "train_nll", "beta", "lr", "train_kl_term",
)

#: ``train`` warns (once) when the KL term ``beta * KL / N`` exceeds ``KL_WARN_RATIO`` times the training NLL
#: (its absolute value: a regression NLL can be negative) for ``KL_WARN_EPOCHS`` consecutive epochs.
KL_WARN_RATIO = 10.0
KL_WARN_EPOCHS = 3


def epoch_line(row: Dict[str, Any], info: DatasetInfo) -> str:
    """The line printed after each epoch: the loss split into its NLL and KL terms, then the validation metrics."""
    head = (f"epoch {row['epoch']:>3}  loss {row['train_loss']:.4g} = nll {row['train_nll']:.4g} + kl term "
            f"{row['train_kl_term']:.4g} (beta {row['beta']:.3g} * KL {row['train_kl']:.3g} / N)  "
            f"time {row['train_epoch_time']:.1f}s  |  val ")
    if info.task == "classification":
        return head + f"acc {row['val_acc']:.4f}  nll {row['val_nll']:.4f}  ece {row['val_ece']:.4f}"
    return head + f"rmse {row['val_rmse']:.4f}  r2 {row['val_r2']:.4f}  nll {row['val_nll']:.4f}"


def write_log(path: Path, history: List[Dict[str, Any]]) -> None:
    """``log.csv`` with a header and one row per epoch of ``history``, written atomically."""
    with atomic_output(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_FIELDS)
            for row in history:
                writer.writerow(_cells(row))


def append_log(path: Path, row: Dict[str, Any]) -> None:
    """One epoch's row at the end of ``log.csv`` (a crash mid-row is repaired on resume: :func:`write_log`)."""
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(_cells(row))


def _cells(row: Dict[str, Any]) -> List[Any]:
    return ["" if row.get(k) is None else row[k] for k in CSV_FIELDS]


def json_row(row: Dict[str, Any]) -> Dict[str, Any]:
    """``row`` with non-finite floats as ``None``, for JSON (checkpoint metadata, the resume history)."""
    return {k: (None if (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in row.items()}


def occupied_mb(device: torch.device) -> float:
    """Peak memory in MiB: CUDA's allocator on a GPU, the process's peak resident size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    except ImportError:  # pragma: no cover - Windows
        return float("nan")


def warn_if_kl_dominates(history: List[Dict[str, Any]]) -> bool:
    """Warn when the last :data:`KL_WARN_EPOCHS` epochs all had a KL term over :data:`KL_WARN_RATIO` times the
    NLL; returns whether it warned. Called by the loop that :func:`autobayes.train` calls: the warning points
    at the caller of ``train``.

    Example:
        >>> rows = [{"train_kl_term": 170.0, "train_nll": 0.5}] * KL_WARN_EPOCHS
        >>> warn_if_kl_dominates(rows)  # doctest: +SKIP
        True
    """
    recent = history[-KL_WARN_EPOCHS:]
    if len(recent) < KL_WARN_EPOCHS:
        return False
    for row in recent:
        kl_term, nll = row.get("train_kl_term"), row.get("train_nll")
        if kl_term is None or nll is None or not kl_term > KL_WARN_RATIO * abs(nll):
            return False
    last = recent[-1]
    warnings.warn(
        f"the KL term of the loss (beta * KL / N = {last['train_kl_term']:.4g} per example) has been more than "
        f"{KL_WARN_RATIO:g}x the NLL ({last['train_nll']:.4g}) for {KL_WARN_EPOCHS} epochs: the loss you watch is "
        f"mostly the KL and says little about the fit (read the NLL and the validation metrics). If the fit or the "
        f"uncertainty is poor, try a KL warm-up (--beta warmup, beta='warmup'), "
        f"a prior closer to the weights (--prior-scale 0.1 / --prior-loc weights, prior_scale=0.1 / "
        f"prior_loc='weights'), or a larger initial posterior scale (--init-scale 1e-2, init_scale=1e-2)",
        stacklevel=4,  # the caller of train(): train -> loop.run -> here
    )
    return True
