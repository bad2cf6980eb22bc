"""Per-example summaries of Monte Carlo predictions: :class:`ClassificationSummary` and
:class:`RegressionSummary`, built by :func:`classification_summary` and :func:`regression_summary`.

``S`` forward passes of a Bayesian network over ``N`` examples give ``(S, N, C)`` class probabilities or
``(S, N[, D])`` regression outputs; these functions reduce them to per-example statistics (mean, median, std,
credible interval, class votes, entropy decomposition), each summary with a per-example CSV writer. Entropies
are in nats.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from ..checks import check_between
from ..errors import ConfigError

__all__ = ["ClassificationSummary", "RegressionSummary", "classification_summary", "regression_summary"]


@dataclass
class ClassificationSummary:
    """Per-example statistics of ``S`` Monte Carlo class-probability vectors of ``N`` examples and ``C`` classes.

    Attributes:
        mean: ``(N, C)`` predictive probabilities ``E[p]`` (the Bayesian model average).
        median: ``(N, C)`` per-class median of the sampled probabilities.
        std: ``(N, C)`` per-class standard deviation over samples.
        lower: ``(N, C)`` lower end of the central ``interval`` credible interval (sample quantile).
        upper: ``(N, C)`` upper end of it.
        votes: ``(N, C)`` int64: in how many samples each class was the most probable; rows sum to ``S``.
        majority_vote: ``(N,)`` the class with most votes (ties: the lowest index).
        predicted: ``(N,)`` argmax of ``mean``.
        predictive_entropy: ``(N,)`` ``H[E p]``, total uncertainty.
        expected_entropy: ``(N,)`` ``E[H p]``, aleatoric part.
        mutual_information: ``(N,)`` ``H[E p] - E[H p]`` >= 0, epistemic part (rounding negatives set to 0).
        n_samples: ``S``.
        interval: the credible level of ``lower`` / ``upper``.
        targets: ``(N,)`` labels when known.
        samples: ``(S, N, C)`` probabilities when kept (``return_samples=True``).
    """

    mean: Tensor
    median: Tensor
    std: Tensor
    lower: Tensor
    upper: Tensor
    votes: Tensor
    majority_vote: Tensor
    predicted: Tensor
    predictive_entropy: Tensor
    expected_entropy: Tensor
    mutual_information: Tensor
    n_samples: int
    interval: float
    targets: Optional[Tensor] = None
    samples: Optional[Tensor] = None

    @property
    def vote_frequency(self) -> Tensor:
        """``(N, C)`` share of samples voting for each class (``votes / n_samples``)."""
        return self.votes.double() / self.n_samples

    def to_rows(self) -> List[Dict[str, Any]]:
        """One dict per example: target, predictions, entropies, then per class ``c`` its
        ``mean_c, median_c, std_c, lower_c, upper_c, votes_c``."""
        rows = []
        for i in range(self.mean.shape[0]):
            row: Dict[str, Any] = {"index": i}
            if self.targets is not None:
                row["target"] = _item(self.targets[i])
            row.update(predicted=int(self.predicted[i]), majority_vote=int(self.majority_vote[i]),
                       predictive_entropy=float(self.predictive_entropy[i]),
                       expected_entropy=float(self.expected_entropy[i]),
                       mutual_information=float(self.mutual_information[i]))
            for c in range(self.mean.shape[1]):
                row.update({f"mean_{c}": float(self.mean[i, c]), f"median_{c}": float(self.median[i, c]),
                            f"std_{c}": float(self.std[i, c]), f"lower_{c}": float(self.lower[i, c]),
                            f"upper_{c}": float(self.upper[i, c]), f"votes_{c}": int(self.votes[i, c])})
            rows.append(row)
        return rows

    def to_csv(self, path: Union[str, os.PathLike]) -> Union[str, os.PathLike]:
        """Write :meth:`to_rows` as one CSV file (a row per example) and return ``path``."""
        return _write_csv(self.to_rows(), path)


@dataclass
class RegressionSummary:
    """Per-example statistics of ``S`` Monte Carlo regression outputs of shape ``(N,)`` or ``(N, D)``.

    Attributes:
        mean: predictive mean, the average of the sampled means.
        median: median of the sampled means.
        std: predictive standard deviation, ``sqrt(epistemic_var + aleatoric_var)`` (the exact standard
            deviation of the equal-weight mixture of the sampled Gaussians).
        epistemic_std: standard deviation of the sampled means (population form, divisor ``S``).
        aleatoric_std: square root of the mean sampled variance; ``None`` without variances.
        lower: lower end of the central ``interval`` predictive interval (see ``interval_method``).
        upper: upper end of it.
        n_samples: ``S``.
        interval: the nominal level of ``lower`` / ``upper``.
        interval_method: ``"normal"`` (``mean -/+ z * std``, ``z`` the normal quantile) or ``"quantile"``
            (sample quantiles of the sampled means).
        targets: the targets when known.
        samples: ``(S, N[, D])`` sampled means when kept; ``variance_samples`` the sampled variances.
    """

    mean: Tensor
    median: Tensor
    std: Tensor
    epistemic_std: Tensor
    aleatoric_std: Optional[Tensor]
    lower: Tensor
    upper: Tensor
    n_samples: int
    interval: float
    interval_method: str
    targets: Optional[Tensor] = None
    samples: Optional[Tensor] = None
    variance_samples: Optional[Tensor] = None

    def to_rows(self) -> List[Dict[str, Any]]:
        """One dict per example: ``mean, median, std, epistemic_std, aleatoric_std, lower, upper, target``
        (with a ``_d`` suffix per output dimension ``d`` when ``D > 1``)."""
        fields = {"mean": self.mean, "median": self.median, "std": self.std, "epistemic_std": self.epistemic_std,
                  "aleatoric_std": self.aleatoric_std, "lower": self.lower, "upper": self.upper,
                  "target": self.targets}
        fields = {k: v.reshape(v.shape[0], -1) for k, v in fields.items() if v is not None}
        n, dims = self.mean.shape[0], fields["mean"].shape[1]
        one_d = self.mean.dim() == 1
        rows = []
        for i in range(n):
            row: Dict[str, Any] = {"index": i}
            for d in range(dims):
                suffix = "" if one_d else f"_{d}"
                row.update({f"{k}{suffix}": float(v[i, d]) for k, v in fields.items()})
            rows.append(row)
        return rows

    def to_csv(self, path: Union[str, os.PathLike]) -> Union[str, os.PathLike]:
        """Write :meth:`to_rows` as one CSV file (a row per example) and return ``path``."""
        return _write_csv(self.to_rows(), path)


def classification_summary(probs_samples: Tensor, targets: Optional[Tensor] = None, interval: float = 0.95,
                           keep_samples: bool = False) -> ClassificationSummary:
    """Summarise ``(S, N, C)`` sampled class probabilities per example.

    The entropy decomposition: ``H[E p] = E[H p] + MI`` where ``MI``, the mutual information between the
    prediction and the weights, measures the disagreement between samples (epistemic uncertainty). ``MI`` is
    computed as the difference and set to 0 where rounding makes it slightly negative.

    Args:
        probs_samples: ``(S, N, C)`` probabilities (softmax outputs, not logits).
        targets: optional ``(N,)`` labels, stored for the CSV and metrics.
        interval: level of the central credible interval, in ``(0, 1)``.
        keep_samples: keep ``probs_samples`` in the summary's ``samples``.

    Returns:
        :class:`ClassificationSummary`.

    Example:
        >>> probs = torch.softmax(torch.randn(100, 8, 3), dim=-1)
        >>> s = classification_summary(probs)
        >>> s.mean.shape, int(s.votes.sum(dim=1)[0])
        (torch.Size([8, 3]), 100)
    """
    p = _as_tensor(probs_samples, "probs_samples")
    if p.dim() != 3 or 0 in p.shape:
        raise ConfigError(
            f"classification_summary: probs_samples must have shape (samples, examples, classes), got "
            f"{tuple(p.shape)}; add the missing dimension, e.g. probs.unsqueeze(0) for one sample"
        )
    interval = check_between(interval, "interval", 0, 1, hint="a credible level, e.g. interval=0.95")
    if not p.is_floating_point():
        raise ConfigError(f"classification_summary: probabilities must be floating point, got {p.dtype}")
    p64 = p.detach().double()
    if (p64 < 0).any() or ((p64.sum(-1) - 1).abs() > 1e-3).any():
        raise ConfigError(
            "classification_summary: probs_samples are not probabilities (negative, or rows not summing to 1); "
            "pass torch.softmax(logits, dim=-1)"
        )
    s, _, c = p64.shape
    mean = p64.mean(0)
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    lower, median, upper = _quantiles(p64, (lo_q, 0.5, hi_q))
    votes = torch.nn.functional.one_hot(p64.argmax(-1), c).sum(0)
    h_mean = _entropy(mean)
    h_each = _entropy(p64).mean(0)
    mi = (h_mean - h_each).clamp_min(0.0)
    out = p.dtype
    return ClassificationSummary(
        mean=mean.to(out), median=median.to(out), std=p64.std(0, unbiased=False).to(out),
        lower=lower.to(out), upper=upper.to(out), votes=votes, majority_vote=votes.argmax(-1),
        predicted=mean.argmax(-1), predictive_entropy=h_mean.to(out), expected_entropy=h_each.to(out),
        mutual_information=mi.to(out), n_samples=s, interval=interval,
        targets=None if targets is None else _targets(targets, p.shape[1]),
        samples=p.detach() if keep_samples else None,
    )


def regression_summary(mean_samples: Tensor, var_samples: Optional[Tensor] = None,
                       targets: Optional[Tensor] = None, interval: float = 0.95, interval_method: str = "normal",
                       keep_samples: bool = False) -> RegressionSummary:
    """Summarise ``(S, N)`` or ``(S, N, D)`` sampled regression means (and variances) per example.

    The predictive distribution is the mixture ``(1/S) sum_s N(mean_s, var_s)``; its mean and variance are
    exact: ``mean = E[mean_s]``, ``var = Var[mean_s] + E[var_s]`` (epistemic + aleatoric). The interval is
    ``interval_method="normal"``: ``mean -/+ z * std`` with ``z = Phi^-1((1 + interval) / 2)``, a normal
    approximation of the mixture; or ``"quantile"``: the sample quantiles of the sampled means (epistemic only,
    so only without ``var_samples``).

    Args:
        mean_samples: ``(S, N[, D])`` sampled predictive means.
        var_samples: optional ``(S, N[, D])`` sampled variances (aleatoric noise, e.g. from a heteroscedastic
            head); ``None`` for epistemic uncertainty only.
        targets: optional targets of shape ``(N[, D])``.
        interval: level of the central interval, in ``(0, 1)``.
        interval_method: ``"normal"`` or ``"quantile"``.
        keep_samples: keep the samples in the summary.

    Returns:
        :class:`RegressionSummary`.

    Example:
        >>> s = regression_summary(torch.randn(200, 5), var_samples=torch.ones(200, 5))
        >>> s.std.shape
        torch.Size([5])
    """
    m = _as_tensor(mean_samples, "mean_samples")
    if m.dim() < 2 or 0 in m.shape or not m.is_floating_point():
        raise ConfigError(
            f"regression_summary: mean_samples must be a float tensor (samples, examples[, outputs]), got "
            f"{tuple(m.shape)} {m.dtype}; for one sample use mean.unsqueeze(0)"
        )
    interval = check_between(interval, "interval", 0, 1, hint="a credible level, e.g. interval=0.95")
    if interval_method not in ("normal", "quantile"):
        raise ConfigError(f"interval_method must be 'normal' or 'quantile', got {interval_method!r}")
    m64 = m.detach().double()
    mean = m64.mean(0)
    epi_var = m64.var(0, unbiased=False)
    alea_var = None
    if var_samples is not None:
        v = _as_tensor(var_samples, "var_samples")
        if v.shape != m.shape:
            raise ConfigError(f"var_samples shape {tuple(v.shape)} must equal mean_samples shape {tuple(m.shape)}")
        if (v < 0).any():
            raise ConfigError("var_samples must be variances >= 0 (for log-variances pass log_var.exp())")
        alea_var = v.detach().double().mean(0)
        if interval_method == "quantile":
            raise ConfigError(
                "interval_method='quantile' uses the sampled means only and would ignore var_samples; use "
                "interval_method='normal'"
            )
    std = (epi_var + (0 if alea_var is None else alea_var)).sqrt()
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    q_lo, median, q_hi = _quantiles(m64, (lo_q, 0.5, hi_q))
    if interval_method == "normal":
        z = NormalDist().inv_cdf(hi_q)
        lower, upper = mean - z * std, mean + z * std
    else:
        lower, upper = q_lo, q_hi
    if targets is not None:
        targets = _as_tensor(targets, "targets").detach().cpu()
        if targets.shape != mean.shape:
            raise ConfigError(f"targets shape {tuple(targets.shape)} must equal the prediction shape {tuple(mean.shape)}")
    out = m.dtype
    return RegressionSummary(
        mean=mean.to(out), median=median.to(out), std=std.to(out), epistemic_std=epi_var.sqrt().to(out),
        aleatoric_std=None if alea_var is None else alea_var.sqrt().to(out), lower=lower.to(out),
        upper=upper.to(out), n_samples=m.shape[0], interval=interval, interval_method=interval_method,
        targets=targets, samples=m.detach() if keep_samples else None,
        variance_samples=None if (var_samples is None or not keep_samples) else var_samples.detach(),
    )


# ---------------------------------------------------------------------- small helpers
def _quantiles(x: Tensor, qs: Tuple[float, ...]) -> List[Tensor]:
    """Quantiles along dim 0 with linear interpolation (numpy's default); no size limit unlike torch.quantile."""
    xs = x.sort(dim=0).values
    n = xs.shape[0]
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, n - 1)
        frac = pos - lo
        out.append(xs[lo] * (1 - frac) + xs[hi] * frac)
    return out


def _entropy(p: Tensor) -> Tensor:
    return -torch.special.xlogy(p, p).sum(-1)


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"{name} must be a tensor or an array, got {type(x).__name__}") from err


def _targets(targets: Any, n: int) -> Tensor:
    t = _as_tensor(targets, "targets").detach().cpu()
    if t.shape[0] != n:
        raise ConfigError(f"targets has {t.shape[0]} entries for {n} examples")
    return t


def _item(x: Tensor) -> Union[int, float]:
    v = x.item() if x.numel() == 1 else x.tolist()
    return v


def _write_csv(rows: List[Dict[str, Any]], path: Union[str, os.PathLike]) -> Union[str, os.PathLike]:
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["index"])
        writer.writeheader()
        writer.writerows(rows)
    return path
