"""What the calibrators read: a classifier's predictive probabilities ``(N, C)`` from a
:class:`~autobayes.uncertainty.ClassificationSummary`, probabilities, logits, or Monte Carlo samples of either
``(S, N, C)`` (averaged: the Bayesian model average), and a regressor's mean and standard deviation."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from ..errors import ConfigError
from ..metrics import as_float
from ..uncertainty.summaries import ClassificationSummary, RegressionSummary

__all__ = ["predictive_probs", "log_predictive", "class_labels", "regression_inputs"]


def predictive_probs(predictions: Any, logits: bool = False, fn: str = "calibration") -> Tensor:
    """``(N, C)`` float64 predictive probabilities of ``predictions``.

    ``predictions``: a :class:`~autobayes.uncertainty.ClassificationSummary` (its ``mean``), probabilities or, with
    ``logits=True``, logits, of shape ``(N, C)``, or ``(S, N, C)`` Monte Carlo samples (each softmaxed when
    logits, then averaged over ``S``).

    Example:
        >>> predictive_probs(torch.zeros(4, 2, 3), logits=True)[0].tolist()
        [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    if isinstance(predictions, ClassificationSummary):
        predictions, logits = predictions.mean, False
    x = torch.as_tensor(as_float(predictions))
    if x.dim() not in (2, 3) or 0 in x.shape:
        raise ConfigError(f"{fn}: predictions must have shape (N, C) or Monte Carlo samples (S, N, C), got "
                          f"{tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ConfigError(f"{fn}: predictions hold NaN or infinite values")
    if logits:
        x = torch.softmax(x, dim=-1)
    elif (x < 0).any() or ((x.sum(-1) - 1).abs() > 1e-3).any():
        raise ConfigError(f"{fn}: predictions are not probabilities (negative, or rows not summing to 1); for a "
                          f"network's raw outputs pass logits=True")
    return x.mean(0) if x.dim() == 3 else x


def log_predictive(predictions: Any, logits: bool = False, fn: str = "calibration") -> Tensor:
    """``(N, C)`` float64 log predictive probabilities; for ``(N, C)`` logits their ``log_softmax`` (exact, with no
    round trip through probabilities that underflow). Zero probabilities become the float64 ``log(tiny)``, so a
    temperature keeps them finite.

    Example:
        >>> log_predictive([[1.0, 0.0]]).tolist()
        [[0.0, -708.3964185322641]]
    """
    if logits and not isinstance(predictions, ClassificationSummary):
        x = torch.as_tensor(as_float(predictions))
        if x.dim() == 2 and 0 not in x.shape and torch.isfinite(x).all():
            return torch.log_softmax(x, dim=-1)
    p = predictive_probs(predictions, logits, fn)
    return p.clamp_min(torch.finfo(torch.float64).tiny).log()


def class_labels(labels: Any, predictions: Any, shape: Tuple[int, int], fn: str) -> Tensor:
    """``(N,)`` int64 labels in ``[0, C)`` for predictions of ``shape`` ``(N, C)``: ``labels``, or a summary's
    ``targets`` when ``labels`` is None."""
    n, classes = shape
    if labels is None:
        labels = getattr(predictions, "targets", None)
        if labels is None:
            raise ConfigError(f"{fn}: pass the labels, e.g. {fn}(probs, labels)")
    y = as_float(labels)
    if y.ndim != 1 or len(y) != n or not (y == y.round()).all():
        raise ConfigError(f"{fn}: labels must be ({n},) integer class indices, got shape {tuple(y.shape)}")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise ConfigError(f"{fn}: labels must lie in [0, {classes - 1}] for {classes} classes, got "
                          f"[{int(y.min())}, {int(y.max())}]")
    return torch.as_tensor(y).long()


def regression_inputs(predictions: Any, targets: Any, std: Any, fn: str) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """``(mean, targets, std)`` as float64 tensors of one shape (``targets`` / ``std`` None when not given); a
    :class:`~autobayes.uncertainty.RegressionSummary` gives its ``mean``, ``std`` and ``targets``."""
    if isinstance(predictions, RegressionSummary):
        std = predictions.std if std is None else std
        targets = predictions.targets if targets is None else targets
        predictions = predictions.mean
    mean = torch.as_tensor(as_float(predictions))
    out = [mean]
    for name, value in (("targets", targets), ("std", std)):
        if value is None:
            out.append(None)
            continue
        t = torch.as_tensor(as_float(value))
        if t.shape != mean.shape and t.numel() == mean.numel():
            t = t.reshape(mean.shape)
        if t.shape != mean.shape:
            raise ConfigError(f"{fn}: {name} has shape {tuple(t.shape)}, the predictions {tuple(mean.shape)}")
        out.append(t)
    if mean.numel() == 0:
        raise ConfigError(f"{fn}: got no predictions")
    if not all(bool(torch.isfinite(t).all()) for t in out if t is not None):
        raise ConfigError(f"{fn}: the predictions, targets or std hold NaN or infinite values")
    if out[2] is not None and not (out[2] > 0).all():
        raise ConfigError(f"{fn}: std must be > 0 everywhere (add the likelihood's noise variance, or use "
                          f"score='absolute')")
    return out[0], out[1], out[2]
