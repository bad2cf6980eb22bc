"""`Rank1Parameter`: a point-estimated tensor times rank-1 mixture factors (Dusenberry et al., ICML 2020)."""

from __future__ import annotations

import contextlib
import math
from typing import Tuple

import torch
from torch import Tensor, nn

from ..config import BayesConfig
from ..kl import mixture_kl
from ..posteriors import POSTERIORS
from ..priors import PRIORS
from .parameter import BayesParameter, current_draws, initial_log_var, seeded_rng

__all__ = ["Rank1Parameter", "balanced_spread"]

#: Key of the draw scope (:func:`~autobayes.nn.parameter.shared_draws`) holding this forward's component offset.
_OFFSET = "rank1_component_offset"
_OFFSET_RANGE = 1 << 30


def balanced_spread(components: int, dims: Tuple[int, int], std: float, like: Tensor) -> Tensor:
    """Offsets ``(K, d0 + d1)`` of the components' means from 1 that make them different networks with the same
    average weight: ``r_k = 1 + a_k u``, ``s_k = 1 + b_k v`` with ``u ~ N(0, std^2 I_d0)``, ``v ~ N(0, std^2 I_d1)``
    and coefficient vectors ``a``, ``b`` over the components that sum to 0, are orthogonal and have mean square 1
    (two columns of a random orthogonal matrix whose first column is constant, times ``sqrt(K)``). Then
    ``mean_k(r_k s_k^T) = 1 + mean(a) u 1^T + mean(b) 1 v^T + mean(a b) u v^T`` is exactly the all-ones matrix:
    the posterior mean of ``W o (r s^T)`` is ``W``, so a converted model under ``use_mean`` is still the model,
    while every element of ``r`` and ``s`` has spread ``std`` across the components (the diversity of Dusenberry
    et al.'s random initialisation). With ``K = 2`` only ``r`` spreads (one direction sums to 0), with ``K = 1``
    nothing. Torch's global generator draws it, as for any initialisation.

    Example:
        >>> off = balanced_spread(4, (3, 5), 0.5, torch.zeros(()))
        >>> r, s = 1 + off[:, :3], 1 + off[:, 3:]
        >>> torch.allclose(torch.einsum("ki,kj->ij", r, s) / 4, torch.ones(3, 5), atol=1e-6)
        True
    """
    d0, d1 = dims
    out = like.new_zeros(components, d0 + d1)
    if components < 2:
        return out
    basis = torch.cat([torch.ones(components, 1), torch.randn(components, components - 1)], dim=1)
    coef = torch.linalg.qr(basis.double())[0][:, 1:3] * math.sqrt(components)  # (K, 1 or 2), orthonormal, sum 0
    coef = coef.to(out)
    out[:, :d0] = coef[:, :1] * (std * torch.randn(d0)).to(out)
    if coef.shape[1] > 1:
        out[:, d0:] = coef[:, 1:2] * (std * torch.randn(d1)).to(out)
    return out


class Rank1Parameter(BayesParameter, kind="multiplicative"):
    """The rank-1 posterior of one tensor ``W`` (``posterior="rank1"``, see :class:`autobayes.posteriors.Rank1`).

    Parameters: ``mu`` (the point estimate ``W``: the same state-dict key as every family's posterior mean, so a
    converted layer's weights land there), ``factor_loc`` and ``factor_log_var`` of shape ``(K, d0 + d1)``: the
    means and log-variances of the ``K`` components of ``z = (r, s)``, ``r`` the first ``d0`` columns (dim 0 of
    ``W``), ``s`` the last ``d1`` (dim 1). A 1-d tensor has no factors: it is a point estimate with KL 0. The
    prior (submodule ``prior``) is the configured family centred at 1, per element of ``z``.

    The component means start spread around 1 by :func:`balanced_spread` (``config.factor_init_std``; ``0``: all at
    1), so that the components are different networks whose average weight is still ``W``; the scales start at the
    configured per-element std (:func:`initial_log_var`).

    ``BayesParameter(tensor, config)`` builds one when ``config.posterior`` is a multiplicative family.

    Example:
        >>> p = BayesParameter(torch.randn(3, 4), BayesConfig(posterior="rank1", components=2))
        >>> type(p).__name__, tuple(p.factor_loc.shape), p().shape
        ('Rank1Parameter', (2, 7), torch.Size([3, 4]))
    """

    def __init__(self, mean: Tensor, config: BayesConfig, *, from_weights: bool = False) -> None:
        nn.Module.__init__(self)
        mean = mean.detach()
        self.mu = nn.Parameter(mean.clone())
        self.posterior = POSTERIORS.get(config.posterior)()
        self.components = config.components
        self.factor_dims: Tuple[int, ...] = tuple(mean.shape[:2]) if mean.dim() >= 2 else ()
        if self.factor_dims:
            ones = mean.new_ones(self.components, sum(self.factor_dims))
            self.factor_loc = nn.Parameter(ones)
            self.factor_log_var = nn.Parameter(
                initial_log_var(ones, config, self.posterior.second_moment(ones.numel()), from_weights=from_weights))
        else:
            self.register_parameter("factor_loc", None)
            self.register_parameter("factor_log_var", None)
        one = torch.tensor(1.0, dtype=mean.dtype)
        self.prior = PRIORS.get(config.prior).from_config(one, config.prior_scale, **config.prior_kwargs).to(
            device=mean.device, dtype=mean.dtype)
        self.kl_method = "repar" if config.kl == "auto" else config.kl  # no closed form (checked by the config)
        self.n_mc = self.components if config.n_mc is None else config.n_mc  # one draw per component
        self.mc_chunk_size = config.mc_chunk_size
        self.use_mean = False
        self.draw_seed = None
        self._cache = None
        if self.factor_dims and config.factor_init_std > 0:
            with torch.no_grad():
                self.factor_loc.add_(balanced_spread(self.components, self.factor_dims, config.factor_init_std,
                                                     self.factor_loc))

    # ------------------------------------------------------------------ views
    @property
    def factor_scale(self) -> Tensor:
        """Per-component scales ``exp(factor_log_var / 2)``, ``(K, d0 + d1)``."""
        return torch.exp(0.5 * self.factor_log_var)

    @property
    def scale(self) -> Tensor:
        return self.factor_scale

    @property
    def mean(self) -> Tensor:
        """``W o mean_k(m_k^r m_k^s^T)``: the posterior mean (``r`` and ``s`` are independent within a component);
        ``W`` itself right after a conversion (the components start spread around 1 with an average of 1, see
        :func:`balanced_spread`). This average of the members' weights is no member of the mixture: use Monte
        Carlo prediction (:func:`autobayes.predict`), which averages the members' outputs, for predictions."""
        if not self.factor_dims:
            return self.mu
        d0 = self.factor_dims[0]
        loc = self.factor_loc
        outer = torch.einsum("ki,kj->ij", loc[:, :d0], loc[:, d0:]) / self.components
        return self.mu * outer.reshape(*outer.shape, *([1] * (self.mu.dim() - 2)))

    @property
    def variance(self) -> Tensor:
        raise AttributeError(
            "a rank-1 posterior's weights are correlated products W o (r s^T); it has no per-weight variance for "
            "local reparameterisation (its layers use forward='local' as a per-example draw of r and s instead)")

    # ------------------------------------------------------------------ draws
    def _draw_scope(self):
        return contextlib.nullcontext() if self.draw_seed is None else seeded_rng(self.draw_seed, self.mu.device)

    def _offset(self) -> Tensor:
        """This forward's component offset: one per forward of a converted model (in the draw scope, shared by
        every layer, so a component is a whole network), else one per call."""
        draws = current_draws()
        offset = None if draws is None else draws.get(_OFFSET)
        if offset is None:
            offset = torch.randint(0, _OFFSET_RANGE, (), device=self.mu.device)
            if draws is not None:
                draws[_OFFSET] = offset
        return offset

    def _factors(self, components: Tensor) -> Tuple[Tensor, Tensor]:
        """One draw of ``(r, s)`` per entry of ``components`` (indices into the mixture): ``(n, d0)``, ``(n, d1)``."""
        n = components.shape[0]
        xi = self.posterior.sample_noise(n, (sum(self.factor_dims),), device=self.mu.device, dtype=self.mu.dtype)
        z = torch.addcmul(self.factor_loc[components], self.factor_scale[components], xi)
        return z[:, : self.factor_dims[0]], z[:, self.factor_dims[0]:]

    def example_factors(self, batch: int) -> Tuple[Tensor, Tensor]:
        """Per-example factors for a batch of ``batch``: example ``i`` uses component
        ``(floor(i K / batch) + offset) mod K`` (the batch split into ``K`` contiguous, near-equal parts, as in
        the paper; a batch repeated ``K`` times gives each copy its own component) with its own draw."""
        with self._draw_scope():
            return self._factors(self._components_of(batch))

    def _components_of(self, batch: int) -> Tensor:
        """The component of each example of a batch of ``batch`` (see :meth:`example_factors`); computed once a
        forward per batch size and number of components when a draw scope is open (every layer reads it)."""
        draws = current_draws()
        key = (_OFFSET, batch, self.components)
        index = None if draws is None else draws.get(key)
        if index is None:
            index = torch.arange(batch, device=self.mu.device) * self.components // max(batch, 1)
            index = (index + self._offset()) % self.components
            if draws is not None:
                draws[key] = index
        return index

    def sample(self) -> Tensor:
        """One weight ``W o (r s^T)``: component ``offset mod K`` (the one example 0 of a batch gets), one draw."""
        if not self.factor_dims:
            return self.mu
        with self._draw_scope():
            r, s = self._factors((self._offset() % self.components).reshape(1))
        outer = r.reshape(-1, 1) * s.reshape(1, -1)
        return self.mu * outer.reshape(*outer.shape, *([1] * (self.mu.dim() - 2)))

    def kl(self) -> Tensor:
        """``KL(q || p)`` of the factors by :func:`autobayes.kl.mixture_kl` (0 for a point-estimated 1-d tensor)."""
        if not self.factor_dims:
            return self.mu.new_zeros(())
        loc, log_var = self.factor_loc, self.factor_log_var
        if hasattr(loc, "full_tensor"):  # FSDP2 shards outside a forward (validation's KL): gather the factors,
            loc, log_var = loc.full_tensor(), log_var.full_tensor()  # on every rank, as the estimator draws noise
        return mixture_kl(self.posterior, self.prior, loc, log_var, self.kl_method, self.n_mc, self.mc_chunk_size)

    def extra_repr(self) -> str:
        return (f"shape={tuple(self.mu.shape)}, posterior={self.posterior.name}, components={self.components}, "
                f"kl={self.kl_method}, n_mc={self.n_mc}")
