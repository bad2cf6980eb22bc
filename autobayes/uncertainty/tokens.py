"""Per-token summaries of Monte Carlo predictions of a language model: :class:`TokenSummary`, built by
:func:`token_summary` (from sampled logits ``(S, N, T, V)``) or, sample by sample without holding them all, by
:class:`TokenAccumulator` (what :func:`autobayes.predict` uses).

Every position ``t`` of every sequence ``n`` is a ``V``-way classification: with ``p_s`` the ``s``-th sample's
softmax, the predictive entropy ``H[E p]`` (total), the expected entropy ``E[H p_s]`` (aleatoric) and the
mutual information ``H[E p] - E[H p_s] >= 0`` (epistemic) per token, in nats. Memory: the running sum of the
probabilities, ``N x T x V`` floats per batch, not ``S`` times that.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = ["TokenSummary", "TokenAccumulator", "token_summary", "concat_token_summaries"]


@dataclass
class TokenSummary:
    """Per-token statistics of ``S`` Monte Carlo forwards of a language model over ``N`` sequences of ``T`` tokens.

    Attributes:
        predictive_entropy: ``(N, T)`` ``H[E p]``, total uncertainty of the next-token distribution at each position.
        expected_entropy: ``(N, T)`` ``E[H p]``, aleatoric part.
        mutual_information: ``(N, T)`` ``H[E p] - E[H p]`` >= 0, epistemic part (rounding negatives set to 0).
        predicted: ``(N, T)`` int64, argmax of the mean probabilities (-1 at padding added by concatenation).
        confidence: ``(N, T)`` the mean probability of ``predicted``.
        n_samples: ``S``.
        targets: ``(N, T)`` the target of each prediction when the data gave labels; -100 where there is none.
            :func:`autobayes.predict` aligns a ``transformers`` causal LM's labels (``labels=input_ids``) with its
            predictions: ``targets[n, t] = labels[n, t + 1]``.
        mask: ``(N, T)`` bool, the positions that hold tokens (the data's ``attention_mask``; batches of different
            lengths are padded with ``False``); ``None`` when every position counts.
        mean: ``(N, T, V)`` mean probabilities, kept only with ``return_samples=True`` (large for big vocabularies).
        samples: ``(S, N, T, V)`` sampled probabilities, kept only with ``return_samples=True``.
    """

    predictive_entropy: Tensor
    expected_entropy: Tensor
    mutual_information: Tensor
    predicted: Tensor
    confidence: Tensor
    n_samples: int
    targets: Optional[Tensor] = None
    mask: Optional[Tensor] = None
    mean: Optional[Tensor] = None
    samples: Optional[Tensor] = None

    @property
    def accuracy(self) -> Optional[float]:
        """The share of the positions with a target (not -100, inside ``mask``) whose ``predicted`` token is the
        target; ``None`` without targets (or with none to score)."""
        if self.targets is None:
            return None
        scored = self.targets != -100
        if self.mask is not None:
            scored &= self.mask
        n = int(scored.sum())
        return None if n == 0 else float((self.predicted == self.targets)[scored].double().mean())

    def to_rows(self) -> List[Dict[str, Any]]:
        """One dict per token (masked positions left out): sequence, position, target, prediction, entropies."""
        rows = []
        n, t = self.predicted.shape
        for i in range(n):
            for j in range(t):
                if self.mask is not None and not bool(self.mask[i, j]):
                    continue
                row: Dict[str, Any] = {"sequence": i, "position": j}
                if self.targets is not None:
                    row["target"] = int(self.targets[i, j])
                row.update(predicted=int(self.predicted[i, j]), confidence=float(self.confidence[i, j]),
                           predictive_entropy=float(self.predictive_entropy[i, j]),
                           expected_entropy=float(self.expected_entropy[i, j]),
                           mutual_information=float(self.mutual_information[i, j]))
                rows.append(row)
        return rows

    def to_csv(self, path: Union[str, os.PathLike]) -> Union[str, os.PathLike]:
        """Write :meth:`to_rows` as one CSV file (a row per token) and return ``path``."""
        rows = self.to_rows()
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["sequence", "position"])
            writer.writeheader()
            writer.writerows(rows)
        return path


def _entropy(p: Tensor) -> Tensor:
    return -torch.special.xlogy(p, p).sum(-1)


class TokenAccumulator:
    """Running per-token sums of ``S`` forwards' logits ``(k, N, T, V)`` (``k`` samples at a time).

    Example:
        >>> acc = TokenAccumulator()
        >>> for _ in range(10):  # doctest: +SKIP
        ...     acc.add(bnn(ids).output.logits.unsqueeze(0))
        >>> acc.summary().mutual_information.shape  # doctest: +SKIP
        torch.Size([N, T])
    """

    def __init__(self, logits: bool = True, keep_samples: bool = False) -> None:
        self.logits = logits
        self.keep = keep_samples
        self.count = 0
        self.sum_p: Optional[Tensor] = None
        self.sum_h: Optional[Tensor] = None
        self.kept: List[Tensor] = []

    def add(self, out: Tensor) -> None:
        """Add ``k`` samples of logits (or probabilities with ``logits=False``), shape ``(k, N, T, V)``."""
        if out.dim() != 4:
            raise ConfigError(f"per-token predictions need logits (batch, tokens, vocabulary) per forward, got "
                              f"{tuple(out.shape[1:])}")
        p = torch.softmax(out.float(), dim=-1) if self.logits else out.float()
        h = _entropy(p.double()).sum(0)
        self.sum_p = p.sum(0) if self.sum_p is None else self.sum_p + p.sum(0)
        self.sum_h = h if self.sum_h is None else self.sum_h + h
        self.count += p.shape[0]
        if self.keep:
            self.kept.append(p.cpu())

    @property
    def positions(self) -> tuple:
        """``(N, T)``: the predicted positions (``()`` before the first :meth:`add`)."""
        return () if self.sum_h is None else tuple(self.sum_h.shape)

    def summary(self, targets: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> TokenSummary:
        """The :class:`TokenSummary` of the samples added so far (on the CPU)."""
        if self.count == 0 or self.sum_p is None or self.sum_h is None:
            raise ConfigError("token summary of no samples: add at least one forward's logits")
        mean = (self.sum_p / self.count).cpu()
        h_mean = _entropy(mean.double())
        h_each = (self.sum_h / self.count).cpu()
        confidence, predicted = mean.max(-1)
        shape = tuple(predicted.shape)
        for name, value in (("targets", targets), ("mask", mask)):
            if value is not None and tuple(value.shape) != shape:
                raise ConfigError(f"{name} of shape {tuple(value.shape)} do not match the predictions {shape}")
        return TokenSummary(
            predictive_entropy=h_mean.float(), expected_entropy=h_each.float(),
            mutual_information=(h_mean - h_each).clamp_min(0.0).float(), predicted=predicted,
            confidence=confidence, n_samples=self.count,
            targets=None if targets is None else targets.detach().cpu(),
            mask=None if mask is None else mask.detach().cpu().bool(),
            mean=mean if self.keep else None, samples=torch.cat(self.kept) if self.keep else None,
        )


def token_summary(logit_samples: Tensor, targets: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                  logits: bool = True, keep_samples: bool = False) -> TokenSummary:
    """Summarise ``(S, N, T, V)`` sampled logits (or probabilities with ``logits=False``) per token.

    Example:
        >>> s = token_summary(torch.randn(20, 2, 5, 11))
        >>> s.mutual_information.shape, bool((s.predictive_entropy >= s.mutual_information).all())
        (torch.Size([2, 5]), True)
    """
    acc = TokenAccumulator(logits=logits, keep_samples=keep_samples)
    acc.add(logit_samples)
    return acc.summary(targets, mask)


def _pad(x: Optional[Tensor], length: int, value: Any, dim: int = 1) -> Optional[Tensor]:
    """``x`` padded with ``value`` to ``length`` along ``dim`` (the token dimension)."""
    if x is None or x.shape[dim] == length:
        return x
    shape = list(x.shape)
    shape[dim] = length - x.shape[dim]
    return torch.cat([x, x.new_full(shape, value)], dim=dim)


def concat_token_summaries(parts: List[TokenSummary]) -> TokenSummary:
    """One :class:`TokenSummary` of the batches ``parts`` (in order); batches of different lengths are padded
    to the longest (entropies NaN, ``predicted`` -1, ``mask`` False).

    Example:
        >>> a, b = token_summary(torch.randn(4, 2, 5, 7)), token_summary(torch.randn(4, 3, 6, 7))
        >>> both = concat_token_summaries([a, b])
        >>> both.predicted.shape, int(both.mask.sum())
        (torch.Size([5, 6]), 28)
    """
    if len(parts) == 1:
        return parts[0]
    length = max(p.predicted.shape[1] for p in parts)
    ragged = any(p.predicted.shape[1] != length for p in parts)
    masks = [p.mask if p.mask is not None else torch.ones(p.predicted.shape, dtype=torch.bool) for p in parts]
    nan = float("nan")

    def cat(name: str, value: Any) -> Optional[Tensor]:
        items = [getattr(p, name) for p in parts]
        if any(item is None for item in items):
            return None
        if name == "samples":  # (S, N, T, V): examples along dim 1, tokens along dim 2
            return torch.cat([_pad(item, length, value, dim=2) for item in items], dim=1)
        return torch.cat([_pad(item, length, value) for item in items], dim=0)

    need_mask = ragged or any(p.mask is not None for p in parts)
    return TokenSummary(
        predictive_entropy=cat("predictive_entropy", nan), expected_entropy=cat("expected_entropy", nan),
        mutual_information=cat("mutual_information", nan), predicted=cat("predicted", -1),
        confidence=cat("confidence", nan), n_samples=parts[0].n_samples, targets=cat("targets", -100),
        mask=torch.cat([_pad(m, length, False) for m in masks]) if need_mask else None,
        mean=cat("mean", 0.0), samples=cat("samples", 0.0),
    )
