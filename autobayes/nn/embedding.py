"""Bayesian ``nn.Embedding`` and ``nn.EmbeddingBag``: a forward samples only the rows its batch looks up.

A table's posterior is mean-field: for an elementwise family (Gaussian, Laplace, logistic) its rows are
independent, so drawing the rows a batch uses -- ``unique`` indices, one draw of those rows, indices remapped --
has exactly the law of drawing the whole table and looking them up. A forward then costs ``O(rows used x dim)``
whatever the vocabulary size; the KL still covers the whole table. For the Radial posterior (one noise direction
normalised over the whole tensor) the rows are not independent: the whole table is drawn. So is it when the
posterior's ``draw_seed`` is set (:func:`autobayes.predict` with ``seed=``), so that every batch sees the same
table.

Forward modes: ``"sample"`` (one draw of the rows per forward, shared by the batch: a token looked up twice gets
the same vector) and ``"mean"`` (exactly the deterministic layer). A lookup has no sum over inputs for local
reparameterisation to act on, so ``"local"`` and ``"auto"`` mean ``"sample"`` for these layers.

``padding_idx``: as in the deterministic layer, the padding row receives no gradient from the output; it is not
sampled either: a padding position outputs the row's posterior mean (``nn.Embedding``'s zeros, unless set), and
``nn.EmbeddingBag`` leaves padding entries out of its bags. Its posterior still counts in the KL (it is part of the
table; with no gradient from the data it stays at the prior's pull).

``max_norm`` (the deterministic layer renormalises the looked-up rows of its weight *in place*) has no posterior
counterpart and is refused at conversion, with the fix in the error.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import BayesConfig
from ..errors import ConfigError
from .base import BayesLayer
from .parameter import BayesParameter

__all__ = ["BayesEmbedding", "BayesEmbeddingBag"]


class _BayesEmbeddingBase(BayesLayer):
    """Shared by both embeddings: the twin's options, the row-wise draw."""

    _OPTIONS: Tuple[str, ...] = ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type",
                                 "scale_grad_by_freq", "sparse")

    def _setup(self, twin: nn.Module, config: BayesConfig, *, from_weights: bool) -> None:
        if twin.max_norm is not None:
            raise ConfigError(
                f"{type(twin).__name__}(max_norm={twin.max_norm}) renormalises its weight in place at each lookup, "
                f"which a posterior cannot follow. Fixes: build it with max_norm=None (and, if wanted, normalise its "
                f"output: torch.nn.functional.normalize(emb(x), dim=-1) * max_norm), or keep it deterministic: "
                f"bayesify(model, exclude=[<its name>]) or drop '{type(twin).__name__}' from layer_types"
            )
        self._copy_hyperparameters(twin)
        self.config = config
        self.weight_posterior = BayesParameter(twin.weight, config, from_weights=from_weights)
        self.bias_posterior = None
        self.forward_mode = "mean" if config.forward == "mean" else "sample"

    def _copy_hyperparameters(self, twin: nn.Module) -> None:
        for name in self._OPTIONS:
            setattr(self, name, getattr(twin, name))

    def _twin_kwargs(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self._OPTIONS}

    @property
    def per_example_noise(self) -> bool:
        return False

    def _rows(self, input: Tensor) -> Tuple[Tensor, Tensor]:
        """``(table, indices)`` for this forward: the posterior mean, the whole table drawn, or only the rows of
        ``input`` drawn with ``input`` remapped into them (see the module docstring)."""
        wp = self.weight_posterior
        if self.use_mean or self.forward_mode == "mean":
            return wp.mean, input
        if wp.draw_seed is not None or not type(wp.posterior).elementwise:
            return wp.sample(), input
        rows, remapped = torch.unique(input, return_inverse=True)
        scale = torch.exp(0.5 * wp.log_var[rows])
        return wp.posterior.sample_weights(wp.mu[rows], scale), remapped.reshape(input.shape)

    def _padding_in(self, input: Tensor, remapped: Tensor) -> Optional[int]:
        """The padding row's index in the table :meth:`_rows` returned (``None`` when the batch has none)."""
        if self.padding_idx is None or remapped is input:
            return self.padding_idx
        hits = (input == self.padding_idx).nonzero()
        return int(remapped.reshape(-1)[_flat_index(hits, input)]) if len(hits) else None


def _flat_index(hits: Tensor, input: Tensor) -> int:
    """The flat position in ``input`` of the first row of ``nonzero()`` output ``hits``."""
    first = hits[0].tolist()
    index = 0
    for size, i in zip(input.shape, first):
        index = index * size + i
    return index


class BayesEmbedding(_BayesEmbeddingBase):
    """Bayesian twin of ``nn.Embedding`` (``padding_idx``, ``scale_grad_by_freq``; ``sparse`` gradients in
    ``"mean"`` mode, dense ones when sampling). Opt-in in :func:`autobayes.bayesify`:
    ``layer_types=["Linear", "Embedding"]``.

    Example:
        >>> emb = BayesEmbedding(50_000, 64, padding_idx=0, config=BayesConfig(posterior="gaussian"))
        >>> emb(torch.tensor([[0, 5, 5, 7]])).shape  # draws rows 0, 5, 7 only; row 0 is the padding row's mean
        torch.Size([1, 4, 64])
    """

    _DETERMINISTIC = nn.Embedding

    def forward(self, input: Tensor) -> Tensor:
        table, indices = self._rows(input)
        sparse = self.sparse and table is self.weight_posterior.mu
        out = F.embedding(indices, table, self._padding_in(input, indices), None, self.norm_type,
                          self.scale_grad_by_freq, sparse)
        if self.padding_idx is not None and table is not self.weight_posterior.mu:
            pad = self.weight_posterior.mu[self.padding_idx].detach()
            out = torch.where((input == self.padding_idx).unsqueeze(-1), pad, out)
        return out


class BayesEmbeddingBag(_BayesEmbeddingBase):
    """Bayesian twin of ``nn.EmbeddingBag``: every ``mode`` (``"sum"``, ``"mean"``, ``"max"``), ``offsets``,
    ``per_sample_weights``, ``include_last_offset`` and ``padding_idx``. Opt-in:
    ``layer_types=["Linear", "EmbeddingBag"]``.

    Example:
        >>> bag = BayesEmbeddingBag(1000, 16, mode="sum", config=BayesConfig(posterior="gaussian"))
        >>> bag(torch.tensor([1, 2, 4, 5, 4]), offsets=torch.tensor([0, 3])).shape
        torch.Size([2, 16])
    """

    _DETERMINISTIC = nn.EmbeddingBag
    _OPTIONS = _BayesEmbeddingBase._OPTIONS + ("mode", "include_last_offset")

    def forward(self, input: Tensor, offsets: Optional[Tensor] = None, per_sample_weights: Optional[Tensor] = None) -> Tensor:
        table, indices = self._rows(input)
        sparse = self.sparse and table is self.weight_posterior.mu
        return F.embedding_bag(indices, table, offsets, None, self.norm_type, self.scale_grad_by_freq, self.mode,
                               sparse, per_sample_weights, self.include_last_offset,
                               self._padding_in(input, indices))
