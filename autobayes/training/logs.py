"""What a run reports: the ``log.csv`` columns and writer, the per-epoch line, the warning of a run that learns
nothing.

The loss is ``NLL + beta * KL / N`` per training example, and with few examples and many weights the KL term can
be most of it (digits: ~170 nats per example against an NLL below 0.5). That is the ELBO working as intended:
``benchmarks/quality.py`` found no configuration that beats the default on digits, breast_cancer or diabetes (a KL
warm-up and ``prior_scale=0.1`` did worse), so a large KL term alone is no reason to warn. The per-epoch line shows
the two terms apart. What does deserve a warning is a network that does not learn from its inputs: when the
validation NLL has been no better than chance (the NLL of the best constant prediction) for
:data:`CHANCE_EPOCHS` consecutive epochs, :func:`warn_if_no_better_than_chance` warns once, with the likely cause.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..data import DatasetInfo
from ..io import atomic_output

__all__ = ["CSV_FIELDS", "CHANCE_MARGIN", "CHANCE_EPOCHS", "epoch_line", "write_log", "json_row",
           "occupied_mb", "chance_nll", "warn_if_no_better_than_chance"]

#: Columns of ``log.csv``: the paper repository's fields, then the validation NLL / ECE, regression metrics and
#: the ELBO terms. Empty cells where a field does not apply (accuracy of a regression run). ``train_kl`` is the
#: model's KL (unscaled), ``train_nll`` the mean NLL per example and ``train_kl_term`` the KL's share of
#: ``train_loss``, ``beta * KL / N`` per example (so ``train_loss = train_nll + train_kl_term``).
CSV_FIELDS = (
    "epoch", "train_loss", "train_acc", "train_avg_batch_time", "train_epoch_time", "n_mc_iter",
    "val_loss", "val_acc", "val_avg_batch_time", "val_epoch_time", "n_test_iter", "occupied_mb", "train_kl",
    "val_nll", "val_ece", "val_rmse", "val_r2", "train_nll", "beta", "lr", "train_kl_term",
)

#: ``train`` warns (once) when the validation NLL has been within ``CHANCE_MARGIN`` nats of chance (or above it)
#: for ``CHANCE_EPOCHS`` consecutive epochs. Chance is the NLL of the best constant prediction on the validation
#: set: its class frequencies (classification), its mean and variance (regression). Measured on digits: the
#: default run is 1.8 nats below chance (2.30) after one epoch; a run whose KL weight (beta = 1000) pulls every
#: weight to the prior outputs constant logits, NLL 2.302-2.303 for 8 epochs; a diverging learning rate (1.0) and
#: a posterior started at the prior's width (init_scale=1) stay above chance (2.5-12).
CHANCE_MARGIN = 0.05
CHANCE_EPOCHS = 3


def epoch_line(row: Dict[str, Any], info: DatasetInfo) -> str:
    """The line printed after each epoch: the loss split into its NLL and KL terms, then the validation metrics."""
    head = (f"epoch {row['epoch']:>3}  loss {row['train_loss']:.4g} = nll {row['train_nll']:.4g} + kl term "
            f"{row['train_kl_term']:.4g} (beta {row['beta']:.3g} * KL {row['train_kl']:.3g} / N)  "
            f"time {row['train_epoch_time']:.1f}s  |  val ")
    if info.task == "classification":
        return head + f"acc {row['val_acc']:.4f}  nll {row['val_nll']:.4f}  ece {row['val_ece']:.4f}"
    return head + f"rmse {row['val_rmse']:.4f}  r2 {row['val_r2']:.4f}  nll {row['val_nll']:.4f}"


def write_log(path: Path, history: List[Dict[str, Any]]) -> None:
    """``log.csv`` with a header and one row per epoch of ``history``, written atomically: the run rewrites the
    whole log after every epoch (a few kilobytes) rather than appending in place, so that a crash mid-write
    leaves the previous complete log, never a torn row."""
    with atomic_output(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_FIELDS)
            for row in history:
                writer.writerow(_cells(row))


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


def chance_nll(targets: Any, task: str, num_classes: int) -> float:
    """The NLL of the best constant prediction of ``targets`` (the validation labels): the entropy of the class
    frequencies (classification), or the Gaussian NLL of their mean and variance (regression).

    Example:
        >>> round(chance_nll(torch.tensor([0, 1, 2, 3]), "classification", 4), 4)  # log 4
        1.3863
    """
    from .. import metrics

    y = torch.as_tensor(targets)
    if task == "classification":
        freq = torch.bincount(y.long().reshape(-1), minlength=num_classes).double() / max(y.numel(), 1)
        return metrics.nll(freq.expand(y.numel(), -1), y.reshape(-1))
    y = y.double()
    var = y.var(0, unbiased=False).clamp_min(1e-12)
    return metrics.gaussian_nll(y.mean(0).expand_as(y), var.expand_as(y), y)


def warn_if_no_better_than_chance(history: List[Dict[str, Any]], chance: Optional[float],
                                  task: str = "classification") -> bool:
    """Warn when the last :data:`CHANCE_EPOCHS` epochs all had a validation NLL above ``chance`` (see
    :func:`chance_nll`) minus :data:`CHANCE_MARGIN`; returns whether it warned. The message names the likely
    cause, read from the history: a diverging training NLL, a KL weight above the ELBO's, or else the data and
    the options. Called by the loop that :func:`autobayes.train` calls: the warning points at the caller of
    ``train``.

    Example:
        >>> rows = [{"val_nll": 2.302, "train_nll": 2.31, "beta": 1000.0}] * CHANCE_EPOCHS
        >>> warn_if_no_better_than_chance(rows, 2.3026, "classification")  # doctest: +SKIP
        True
    """
    recent = history[-CHANCE_EPOCHS:]
    if chance is None or not math.isfinite(chance) or len(recent) < CHANCE_EPOCHS:
        return False
    for row in recent:
        nll = row.get("val_nll")
        if nll is not None and math.isfinite(nll) and nll < chance - CHANCE_MARGIN:
            return False
    last = recent[-1]
    train_nll = [row.get("train_nll") for row in recent]
    beta = max(float(row.get("beta") or 0.0) for row in recent)
    if any(t is None or not math.isfinite(t) or t > 100 * max(chance, 1.0) for t in train_nll):
        cause = (f"the training NLL diverges ({last.get('train_nll'):.3g}): lower the learning rate (e.g. --lr 1e-3, "
                 f"lr=1e-3)")
    elif beta > 1.0:
        cause = (f"beta reached {beta:g}, weighting the KL above the ELBO's 1, which pulls every weight to the prior "
                 f"until the network outputs a constant: train the ELBO (--beta none, beta='none', the default)")
    else:
        cause = ("check that the labels belong to the inputs and the inputs are normalised; if you changed the "
                 "Bayesian options (--init-scale, --prior-scale, --beta), try the defaults (no other configuration "
                 "benchmarks/quality.py measured did better), or a smaller learning rate")
    warnings.warn(
        f"the validation NLL ({last.get('val_nll'):.4g}) has been no better than chance ({chance:.4g}, the NLL of "
        f"always predicting the validation set's "
        f"{'class frequencies' if task == 'classification' else 'mean with its variance'}) for {CHANCE_EPOCHS} epochs: the network is not learning from its inputs; {cause}",
        stacklevel=4,  # the caller of train(): train -> loop.run -> here
    )
    return True
