"""Monte Carlo prediction with a Bayesian network: :func:`predict` draws ``n_samples`` posterior predictions
per example, several per forward where the model's noise allows it, optionally with seeded draws shared
between batches and calls, and summarises them (:mod:`autobayes.uncertainty.summaries`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..checks import check_int, check_positive
from ..errors import ConfigError
from ..losses import split_mean_logvar
from .summaries import ClassificationSummary, RegressionSummary, classification_summary, regression_summary
from ..hf.tasks import is_causal_lm, next_token_targets
from .tokens import TokenAccumulator, TokenSummary, concat_token_summaries

__all__ = ["predict"]

#: Rough peak activation memory of a forward, in multiples of the input's size, used to choose how many
#: samples to draw per forward from ``memory_budget_mb`` (pass ``chunk_size`` to override).
_ACTIVATION_FACTOR = 32


def predict(bnn: nn.Module, data: Union[Tensor, Iterable], n_samples: int = 100, *, task: str = "classification",
            samples_per_forward: Union[str, int] = "auto", chunk_size: Optional[int] = None,
            memory_budget_mb: float = 512, logits: bool = True, heteroscedastic: bool = False,
            interval: float = 0.95, return_samples: bool = False, progress: bool = True,
            device: Optional[Union[str, torch.device]] = None,
            seed: Optional[int] = None) -> Union[ClassificationSummary, RegressionSummary, TokenSummary]:
    """Draw ``n_samples`` posterior predictions per example and summarise them.

    Runs the model in eval mode under ``torch.no_grad()`` (and ``autobayes.kl_disabled(bnn)`` when available),
    restoring its train/eval mode afterwards. The model may return ``(output, kl)`` or a tensor; an output with
    ``logits`` (a Hugging Face ``ModelOutput``) gives its logits.

    Language models (``task="tokens"``, chosen automatically for classification logits ``(N, T, V)`` per
    forward): per-token predictive entropy, expected entropy and mutual information ``(N, T)``
    (:class:`~autobayes.uncertainty.tokens.TokenSummary`), accumulated sample by sample (the sum of the
    probabilities is kept, not every sample). Sequence classification (logits ``(N, C)``) gives the per-example
    :class:`ClassificationSummary`. A batch may be a dict of tensors (a tokenizer's output: ``input_ids``,
    ``attention_mask``, ...) passed as keyword arguments; its ``labels`` are kept as targets, not passed, and
    its ``attention_mask`` becomes the token summary's ``mask`` (when it covers the predicted positions). For a
    ``transformers`` causal LM the labels follow transformers' convention (``labels=input_ids``, shifted inside the
    model): the summary's ``targets[:, t]`` is ``labels[:, t + 1]``, the token the prediction at ``t`` is for
    (the last position has none: -100).

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
        data: an input tensor or dict of tensors (one batch), or an iterable (e.g. a ``DataLoader``) yielding
            ``x``, ``(x, y, ...)`` or dicts of tensors; targets ``y`` (a dict's ``labels``) are kept in the summary.
        n_samples: number of posterior samples per example, >= 1.
        task: ``"classification"`` (output: logits ``(B, C)``; ``(B, T, V)`` gives per-token values as
            ``"tokens"``), ``"tokens"`` (a language model's logits ``(B, T, V)``) or ``"regression"`` (output
            ``(B[, D])``, or ``(B, 2 * D)`` mean and log-variance with ``heteroscedastic=True``).
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
        :class:`ClassificationSummary`, :class:`RegressionSummary` or :class:`TokenSummary` over all examples,
        in data order.

    Example:
        >>> summary = predict(bnn, test_loader, n_samples=100)  # doctest: +SKIP
        >>> summary.to_csv("runs/test_predictions.csv")         # doctest: +SKIP
    """
    n_samples = check_int(n_samples, "n_samples", 1)
    if task not in ("classification", "regression", "tokens"):
        raise ConfigError(f"predict: task must be 'classification', 'regression' or 'tokens', got {task!r}")
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", 1)
    memory_budget_mb = check_positive(memory_budget_mb, "predict: memory_budget_mb", hint="e.g. memory_budget_mb=512")
    if seed is not None:
        seed = check_int(seed, "predict: seed", 0, hint="or seed=None for independent draws in each batch")
    if device is None:
        device = next((p.device for p in bnn.parameters()), torch.device("cpu"))
    was_training = bnn.training
    bnn.eval()
    try:
        per_example = _per_example_noise(bnn)
        causal = is_causal_lm(bnn)
        if samples_per_forward == "auto":
            fixed_k = None if per_example else 1
        else:
            fixed_k = check_int(samples_per_forward, "samples_per_forward", 1, hint="or 'auto'")
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
                x = _to(x, device)
                k = fixed_k or _auto_k(_lead(x), n_samples, chunk_size, memory_budget_mb)
                outs: List[Tensor] = []
                tokens = TokenAccumulator(logits, return_samples) if task == "tokens" else None
                for done in range(0, n_samples, k):
                    with _shared_draws(bnn, seed, done):
                        out = _forward(bnn, x, min(k, n_samples - done))
                    if tokens is None and task == "classification" and out.dim() == 4:
                        tokens = TokenAccumulator(logits, return_samples)  # a language model's (N, T, V)
                    if tokens is not None:
                        tokens.add(out)
                    else:
                        outs.append(out)
                if tokens is not None:
                    if y is not None and causal:  # transformers' convention: labels=input_ids, shifted inside
                        y = next_token_targets(y)
                    summaries.append(tokens.summary(y, _token_mask(x, tokens)))
                else:
                    out = torch.cat(outs, dim=0).cpu()
                    summaries.append(_summarise(out, y, task, logits, heteroscedastic, interval, return_samples))
    finally:
        bnn.train(was_training)
    if not summaries:
        raise ConfigError("predict: the data yielded no batches")
    return _concat(summaries)


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
    from ..nn.parameter import seeded_draws

    with seeded_draws(model, (seed, index)):
        yield


def _cached_scales(model: nn.Module):
    from ..nn.parameter import cached_scales

    return cached_scales(model)


def _kl_off(model: nn.Module):
    try:
        from .. import kl_disabled  # added by autobayes.api; absent in older versions
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


def _lead(x: Any) -> Tensor:
    """The tensor that sets a batch's size: ``x`` itself, or a dict batch's first tensor (``input_ids``)."""
    if isinstance(x, Mapping):
        return x.get("input_ids", next(v for v in x.values() if isinstance(v, Tensor)))
    return x


def _to(x: Any, device: Any) -> Any:
    if isinstance(x, Mapping):
        return {key: value.to(device) if isinstance(value, Tensor) else value for key, value in x.items()}
    return x.to(device)


def _token_mask(x: Any, tokens: TokenAccumulator) -> Optional[Tensor]:
    """A dict batch's ``attention_mask`` when it covers the predicted positions (an encoder-decoder's logits
    are the decoder's: its encoder mask does not apply)."""
    mask = x.get("attention_mask") if isinstance(x, Mapping) else None
    return mask if mask is not None and tuple(mask.shape) == tokens.positions else None


def _repeat(x: Tensor, k: int) -> Tensor:
    return x if k == 1 else x.repeat(k, *([1] * (x.dim() - 1)))


def _forward(model: nn.Module, x: Any, k: int) -> Tensor:
    lead = _lead(x)
    if isinstance(x, Mapping):  # keyword inputs: every per-example tensor repeated
        xr = _repeat(lead, k)
        out = model(**{key: _repeat(v, k) if isinstance(v, Tensor) and v.dim() and v.shape[0] == lead.shape[0] else v
                       for key, v in x.items()})
    else:
        xr = _repeat(x, k)
        out = model(xr)
    if not isinstance(out, Tensor):
        if hasattr(out, "output"):  # BayesOutput(output, kl)
            out = out.output
        elif isinstance(out, (tuple, list)) and len(out) == 2 and (
                isinstance(out[0], Tensor) or hasattr(out[0], "logits")):
            out = out[0]
    if not isinstance(out, Tensor) and isinstance(getattr(out, "logits", None), Tensor):
        out = out.logits  # a Hugging Face ModelOutput
    if not isinstance(out, Tensor):
        raise ConfigError(
            f"predict: the model returned {type(out).__name__}; expected a tensor, an (output, kl) pair or an "
            f"output with logits"
        )
    if out.shape[0] != xr.shape[0]:
        raise ConfigError(
            f"predict: the model output has {out.shape[0]} rows for {xr.shape[0]} input rows; predict needs one "
            f"output row per input row (batch first)"
        )
    return out.reshape(k, lead.shape[0], *out.shape[1:])


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
    if isinstance(data, Mapping):
        yield _split_labels(data)
        return
    from tqdm.auto import tqdm

    try:
        total = len(data)
    except TypeError:
        total = None
    for batch in tqdm(data, total=total, disable=not progress, desc="predict", unit="batch", leave=False):
        if isinstance(batch, Tensor):
            yield batch, None
        elif isinstance(batch, Mapping):
            yield _split_labels(batch)
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
            y = batch[1] if len(batch) > 1 else None
            yield batch[0], (torch.as_tensor(y).cpu() if y is not None else None)
        else:
            raise ConfigError(
                f"predict: each batch must be a tensor x, a tuple (x, y, ...) or a dict of tensors, got "
                f"{type(batch).__name__}; "
                f"wrap other loaders, e.g. (batch['image'], batch['label']) for batch in loader"
            )


def _split_labels(batch: Mapping) -> Tuple[dict, Optional[Tensor]]:
    """A dict batch's model inputs, and its ``labels`` (targets, not given to the model)."""
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    if not any(isinstance(v, Tensor) for v in inputs.values()):
        raise ConfigError(f"predict: a dict batch needs tensor inputs (e.g. input_ids), got keys {list(batch)}")
    y = batch.get("labels")
    return inputs, (torch.as_tensor(y).cpu() if y is not None else None)


def _concat(parts: list):
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], TokenSummary):
        return concat_token_summaries(parts)
    first, values = parts[0], {}
    for f in dataclasses.fields(first):
        items = [getattr(p, f.name) for p in parts]
        if isinstance(items[0], Tensor):
            values[f.name] = torch.cat(items, dim=1 if f.name in ("samples", "variance_samples") else 0)
        else:
            values[f.name] = items[0]
    return type(first)(**values)
