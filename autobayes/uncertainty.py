"""Summaries of Monte Carlo predictions of a Bayesian network, and :func:`predict` to draw them.

A Bayesian network gives a fresh posterior sample at each forward pass. ``S`` passes over ``N`` examples give
``(S, N, C)`` class probabilities or ``(S, N[, D])`` regression outputs, which these functions reduce to
per-example statistics (mean, median, std, credible interval, class votes, entropy decomposition), each with a
per-example CSV writer. Entropies are in nats.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import math
import numbers
import os
import warnings
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .errors import ConfigError
from .losses import split_mean_logvar

__all__ = [
    "ClassificationSummary",
    "RegressionSummary",
    "OODScores",
    "classification_summary",
    "regression_summary",
    "predict",
    "score_ood",
]

#: Rough peak activation memory of a forward, in multiples of the input's size, used to choose how many
#: samples to draw per forward from ``memory_budget_mb`` (pass ``chunk_size`` to override).
_ACTIVATION_FACTOR = 32


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
    interval = _check_interval(interval)
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
    interval = _check_interval(interval)
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


def predict(bnn: nn.Module, data: Union[Tensor, Iterable], n_samples: int = 100, *, task: str = "classification",
            samples_per_forward: Union[str, int] = "auto", chunk_size: Optional[int] = None,
            memory_budget_mb: float = 512, logits: bool = True, heteroscedastic: bool = False,
            interval: float = 0.95, return_samples: bool = False, progress: bool = True,
            device: Optional[Union[str, torch.device]] = None,
            seed: Optional[int] = None) -> Union[ClassificationSummary, RegressionSummary]:
    """Draw ``n_samples`` posterior predictions per example and summarise them.

    Runs the model in eval mode under ``torch.no_grad()`` (and ``autobayes.kl_disabled(bnn)`` when available),
    restoring its train/eval mode afterwards. The model may return ``(output, kl)`` or a tensor.

    Several samples per forward: the batch is repeated ``k`` times along dim 0 (``x.repeat``) and the output
    split back into ``k`` samples. The rows are independent posterior samples only when the model draws its
    noise per example (local reparameterisation); a model that draws one weight sample per forward would give
    ``k`` copies of one sample. So ``samples_per_forward="auto"`` asks the model: ``k > 1`` only when some
    submodule has ``per_example_noise = True`` and none has ``per_example_noise = False`` (the outermost
    module with the attribute speaks for its submodules); ``k`` is then the
    largest that fits ``chunk_size`` rows (if given) or ``memory_budget_mb`` (estimated as
    ``32 x`` the input's size per row, a rough guess). An integer forces ``k``.

    Shared draws (``seed``): a layer that samples its weights (``forward="sample"``) gives one draw to every
    example of a forward, so without a seed each batch, and each call, gets its own ``n_samples`` draws, and
    a statistic compared across batches or calls (an OOD AUROC) measures the draws as well as the data. With
    ``seed``, the ``s``-th sample of every batch uses the same draw of every weight tensor, a function of
    ``(seed, s, tensor)`` only: two calls with the same seed give both data sets the same ``n_samples``
    posterior draws (see :func:`score_ood`). Per-example noise (local reparameterisation) stays independent.

    Args:
        bnn: the Bayesian model.
        data: an input tensor (one batch), or an iterable (e.g. a ``DataLoader``) yielding ``x`` or
            ``(x, y, ...)``; targets ``y`` are kept in the summary.
        n_samples: number of posterior samples per example, >= 1.
        task: ``"classification"`` (output: logits ``(B, C)``) or ``"regression"`` (output ``(B[, D])``, or
            ``(B, 2 * D)`` mean and log-variance with ``heteroscedastic=True``).
        samples_per_forward: ``"auto"`` or an integer ``k >= 1`` (see above).
        chunk_size: with ``"auto"``, the most rows (``k * batch size``) one forward may take.
        memory_budget_mb: with ``"auto"`` and no ``chunk_size``, the memory one forward may use.
        logits: classification only: the output is logits (softmax applied) rather than probabilities.
        heteroscedastic: regression only: the output carries mean and log-variance (:func:`split_mean_logvar`).
        interval: level of the credible / predictive intervals.
        return_samples: keep the raw samples in the summary's ``samples``.
        progress: show a tqdm progress bar over the batches.
        device: where to run the model; default the device of its first parameter.
        seed: when given, share the posterior weight draws between batches and calls (see above).

    Returns:
        :class:`ClassificationSummary` or :class:`RegressionSummary` over all examples, in data order.

    Example:
        >>> summary = predict(bnn, test_loader, n_samples=100)  # doctest: +SKIP
        >>> summary.to_csv("runs/test_predictions.csv")         # doctest: +SKIP
    """
    n_samples = _positive_int(n_samples, "n_samples")
    if task not in ("classification", "regression"):
        raise ConfigError(f"predict: task must be 'classification' or 'regression', got {task!r}")
    if chunk_size is not None:
        chunk_size = _positive_int(chunk_size, "chunk_size")
    if not (isinstance(memory_budget_mb, numbers.Real) and memory_budget_mb > 0):
        raise ConfigError(f"predict: memory_budget_mb must be > 0, got {memory_budget_mb!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ConfigError(f"predict: seed must be an integer >= 0 or None, got {seed!r}")
    if device is None:
        device = next((p.device for p in bnn.parameters()), torch.device("cpu"))
    was_training = bnn.training
    bnn.eval()
    try:
        per_example = _per_example_noise(bnn)
        if samples_per_forward == "auto":
            fixed_k = None if per_example else 1
        else:
            fixed_k = _positive_int(samples_per_forward, "samples_per_forward")
            if fixed_k > 1 and per_example is False:
                warnings.warn(
                    f"predict: samples_per_forward={fixed_k} on a model whose layers draw one weight sample per "
                    f"forward (per_example_noise=False): the {fixed_k} repeated rows share that sample, so the "
                    f"samples are not independent; use samples_per_forward='auto' or 1",
                    stacklevel=2,
                )
        summaries = []
        with torch.no_grad(), _kl_off(bnn), _cached_scales(bnn):
            for x, y in _batches(data, progress):
                x = x.to(device)
                k = fixed_k or _auto_k(x, n_samples, chunk_size, memory_budget_mb)
                outs = []
                for done in range(0, n_samples, k):
                    with _shared_draws(bnn, seed, done):
                        outs.append(_forward(bnn, x, min(k, n_samples - done)))
                out = torch.cat(outs, dim=0).cpu()
                summaries.append(_summarise(out, y, task, logits, heteroscedastic, interval, return_samples))
    finally:
        bnn.train(was_training)
    if not summaries:
        raise ConfigError("predict: the data yielded no batches")
    return _concat(summaries)


@dataclass
class OODScores:
    """Uncertainty of an in-distribution and an out-of-distribution set, scored with the same posterior draws.

    Attributes:
        in_distribution: :class:`ClassificationSummary` of the in-distribution set.
        out_of_distribution: :class:`ClassificationSummary` of the OOD set.
        auroc_mutual_information: AUROC of mutual information as a score of "out of distribution"
            (0.5: no separation, 1: every OOD example scores higher than every in-distribution one).
        auroc_predictive_entropy: the same for predictive entropy.
        n_samples: posterior draws per example, the same draws for both sets.
        seed: the seed the draws were made from.
    """

    in_distribution: ClassificationSummary
    out_of_distribution: ClassificationSummary
    auroc_mutual_information: float
    auroc_predictive_entropy: float
    n_samples: int
    seed: int


def score_ood(bnn: nn.Module, in_data: Union[Tensor, Iterable], ood_data: Union[Tensor, Iterable],
              n_samples: int = 100, *, seed: int = 0, **predict_options: Any) -> OODScores:
    """Score how well the model's uncertainty separates ``ood_data`` from ``in_data``, fairly.

    Both sets are predicted by :func:`predict` with the same ``seed``: the ``s``-th of the ``n_samples``
    predictions of every example, in either set and in any batch, uses the same draw of every weight tensor
    that the model samples (per-example noise, as in local reparameterisation, is independent per example
    anyway). Predicting the sets separately, each batch with its own draws, makes a model whose weights are
    sampled once per forward (``forward="sample"``, the Radial's default) score the draws each set happened to
    get: a copy of the in-distribution set could reach an AUROC near 0 or 1. With shared draws the copy scores
    0.5 and a difference in the AUROC is a difference in the data.

    The mutual information and entropy of each example are plug-in estimates from ``n_samples`` draws: more
    samples give less noisy scores (100 is a sound default; 10 is enough for a rough look).

    Args:
        bnn: the Bayesian classifier.
        in_data: in-distribution inputs (a tensor or an iterable of ``x`` / ``(x, y, ...)`` batches).
        ood_data: out-of-distribution inputs, likewise.
        n_samples: posterior draws per example (>= 1), the same draws for both sets.
        seed: seed of the draws (the result is a function of it).
        **predict_options: passed to :func:`predict` (e.g. ``device``, ``progress``, ``interval``);
            ``task`` is ``"classification"``.

    Returns:
        :class:`OODScores`.

    Example:
        >>> noise = torch.rand(360, 1, 8, 8)
        >>> scores = score_ood(bnn, DataLoader(val_set, batch_size=256), noise, n_samples=100)  # doctest: +SKIP
        >>> scores.auroc_mutual_information  # doctest: +SKIP
        0.97
    """
    from .metrics import auroc

    for key in ("task", "seed", "n_samples"):
        if key in predict_options:
            raise ConfigError(f"score_ood: {key!r} is set by score_ood itself; remove {key}={predict_options[key]!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"score_ood: seed must be an integer >= 0, got {seed!r}")
    s_in = predict(bnn, in_data, n_samples, task="classification", seed=int(seed), **predict_options)
    s_out = predict(bnn, ood_data, n_samples, task="classification", seed=int(seed), **predict_options)
    return OODScores(
        in_distribution=s_in, out_of_distribution=s_out,
        auroc_mutual_information=auroc(s_in.mutual_information, s_out.mutual_information),
        auroc_predictive_entropy=auroc(s_in.predictive_entropy, s_out.predictive_entropy),
        n_samples=int(n_samples), seed=int(seed),
    )


# ---------------------------------------------------------------------- helpers of predict
def _per_example_noise(model: nn.Module) -> Optional[bool]:
    """``all`` of the outermost ``per_example_noise`` flags (None when no module has one).

    A module's flag speaks for its whole subtree: a layer drawing per-example noise with local
    reparameterisation may hold parameter modules that, used alone, would sample weights.
    """
    flags: List[bool] = []

    def visit(module: nn.Module) -> None:
        if hasattr(module, "per_example_noise"):
            flags.append(bool(module.per_example_noise))
            return
        for child in module.children():
            visit(child)

    visit(model)
    return all(flags) if flags else None


@contextlib.contextmanager
def _shared_draws(model: nn.Module, seed: Optional[int], index: int):
    """Give every :class:`~autobayes.nn.BayesParameter` of ``model`` the draw seed of ``(seed, index, its
    position)`` for one forward (nothing when ``seed`` is None)."""
    if seed is None:
        yield
        return
    from .nn.parameter import BayesParameter

    params = [m for m in model.modules() if isinstance(m, BayesParameter)]
    for param, draw_seed in zip(params, _draw_seeds(seed, index, len(params))):
        param.draw_seed = draw_seed
    try:
        yield
    finally:
        for param in params:
            param.draw_seed = None


@functools.lru_cache(maxsize=4096)
def _draw_seeds(seed: int, index: int, n: int) -> Tuple[int, ...]:
    """``n`` independent 63-bit seeds for the ``index``-th sample (numpy's ``SeedSequence`` spawning)."""
    return tuple(int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
                 for child in np.random.SeedSequence([seed, index]).spawn(n))


def _cached_scales(model: nn.Module):
    from .nn.parameter import cached_scales

    return cached_scales(model)


def _kl_off(model: nn.Module):
    try:
        from . import kl_disabled  # added by autobayes.api; absent in older versions
    except ImportError:
        return contextlib.nullcontext()
    return kl_disabled(model)


def _auto_k(x: Tensor, n_samples: int, chunk_size: Optional[int], budget_mb: float) -> int:
    batch = max(1, x.shape[0])
    if chunk_size is not None:
        rows = chunk_size
    else:
        row_bytes = max(1, x[0].numel() * x.element_size() * _ACTIVATION_FACTOR) if x.shape[0] else 1
        rows = int(budget_mb * 2**20 // row_bytes)
    return max(1, min(n_samples, rows // batch))


def _forward(model: nn.Module, x: Tensor, k: int) -> Tensor:
    xr = x if k == 1 else x.repeat(k, *([1] * (x.dim() - 1)))
    out = model(xr)
    if not isinstance(out, Tensor):
        if hasattr(out, "output") and isinstance(out.output, Tensor):
            out = out.output
        elif isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[0], Tensor):
            out = out[0]
        else:
            raise ConfigError(
                f"predict: the model returned {type(out).__name__}; expected a tensor or an (output, kl) pair"
            )
    if out.shape[0] != xr.shape[0]:
        raise ConfigError(
            f"predict: the model output has {out.shape[0]} rows for {xr.shape[0]} input rows; predict needs one "
            f"output row per input row (batch first)"
        )
    return out.reshape(k, x.shape[0], *out.shape[1:])


def _summarise(out: Tensor, y: Optional[Tensor], task: str, logits: bool, heteroscedastic: bool,
               interval: float, keep: bool):
    if task == "classification":
        if out.dim() != 3:
            raise ConfigError(
                f"predict(task='classification') expects logits of shape (batch, classes) per forward, got "
                f"{tuple(out.shape[1:])}; use task='regression' for other outputs"
            )
        probs = torch.softmax(out.float() if out.dtype in (torch.float16, torch.bfloat16) else out, dim=-1) \
            if logits else out
        return classification_summary(probs, targets=y, interval=interval, keep_samples=keep)
    var = None
    if heteroscedastic:
        out, log_var = split_mean_logvar(out)
        var = log_var.exp()
    if y is not None and y.shape != out.shape[1:] and y.numel() == out[0].numel():
        y = y.reshape(out.shape[1:])
    return regression_summary(out, var, targets=y, interval=interval, keep_samples=keep)


def _batches(data: Any, progress: bool) -> Iterable[Tuple[Tensor, Optional[Tensor]]]:
    if isinstance(data, Tensor):
        yield data, None
        return
    from tqdm.auto import tqdm

    try:
        total = len(data)
    except TypeError:
        total = None
    for batch in tqdm(data, total=total, disable=not progress, desc="predict", unit="batch", leave=False):
        if isinstance(batch, Tensor):
            yield batch, None
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
            y = batch[1] if len(batch) > 1 else None
            yield batch[0], (torch.as_tensor(y).cpu() if y is not None else None)
        else:
            raise ConfigError(
                f"predict: each batch must be a tensor x or a tuple (x, y, ...), got {type(batch).__name__}; "
                f"wrap other loaders, e.g. (batch['image'], batch['label']) for batch in loader"
            )


def _concat(parts: list):
    if len(parts) == 1:
        return parts[0]
    first, values = parts[0], {}
    for f in dataclasses.fields(first):
        items = [getattr(p, f.name) for p in parts]
        if isinstance(items[0], Tensor):
            values[f.name] = torch.cat(items, dim=1 if f.name in ("samples", "variance_samples") else 0)
        else:
            values[f.name] = items[0]
    return type(first)(**values)


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


def _check_interval(interval: Any) -> float:
    if isinstance(interval, bool) or not isinstance(interval, numbers.Real) or not 0 < interval < 1:
        raise ConfigError(f"interval must be a level in (0, 1), e.g. 0.95, got {interval!r}")
    return float(interval)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


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
