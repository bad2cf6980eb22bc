"""The Monte Carlo KL of a mixture posterior (the rank-1 family's factors), which has no closed form."""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import torch
from torch import Tensor

from ..posteriors import Posterior
from ..posteriors.base import chunk_length
from ..priors import Normal, Prior
from .repar import surrogate_mean

__all__ = ["mixture_kl", "mixture_log_prob", "fused_mixture_kl", "EstimatedTensor", "MixtureTensor"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_COUNTS: Dict[Tuple[torch.device, Tuple[int, ...]], Tensor] = {}


def counts_tensor(counts: Tuple[int, ...], device: torch.device) -> Tensor:
    """The element counts of a group of concatenated tensors as a tensor on ``device``, for
    ``repeat_interleave`` (cached: no host-to-device copy per training step; the fused KLs read it)."""
    if torch.compiler.is_compiling():
        return torch.tensor(counts, device=device)
    key = (device, counts)
    rep = _COUNTS.get(key)
    if rep is None:
        if len(_COUNTS) > 64:
            _COUNTS.clear()
        rep = _COUNTS[key] = torch.tensor(counts, device=device)
    return rep


class EstimatedTensor(Protocol):
    """What the fused KLs read of any tensor's posterior: its family, prior and estimator (fields of
    :class:`autobayes.nn.BayesParameter`; protocols, so that ``kl/`` does not import the layers)."""

    posterior: Posterior
    prior: Prior
    kl_method: str
    n_mc: int
    mc_chunk_size: int

    def kl(self) -> Tensor: ...


class MixtureTensor(EstimatedTensor, Protocol):
    """What :func:`fused_mixture_kl` reads of a rank-1 tensor's posterior (:class:`autobayes.nn.Rank1Parameter`)."""

    factor_loc: Optional[Tensor]
    factor_log_var: Optional[Tensor]


def mixture_log_prob(posterior: Posterior, z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """``log q(z)`` of the equal-weight mixture ``q = (1/K) sum_k prod_j q_k(z_j)``, components ``(loc[k],
    scale[k])`` of ``posterior``'s :meth:`~autobayes.posteriors.Rank1.log_density`; ``z`` is ``(..., D)``, the
    result ``(...)``.

    Example:
        >>> from autobayes.posteriors import Rank1
        >>> lp = mixture_log_prob(Rank1(), torch.zeros(1), torch.zeros(1, 1), torch.ones(1, 1))
        >>> round(float(lp), 4)  # log N(0; 0, 1)
        -0.9189
    """
    pairs = posterior.log_density(z.unsqueeze(-2), loc, scale).sum(-1)  # (..., K)
    return torch.logsumexp(pairs, dim=-1) - math.log(loc.shape[0])


def _segment_log_prob(posterior: Posterior, z: Tensor, loc: Tensor, scale: Tensor, segments: Tensor,
                      n_segments: int) -> Tensor:
    """:func:`mixture_log_prob` of ``n_segments`` independent mixtures side by side: column ``j`` of ``z``,
    ``loc``, ``scale`` belongs to mixture ``segments[j]``; the result is ``(..., n_segments)``."""
    dens = posterior.log_density(z.unsqueeze(-2), loc, scale)  # (..., K, D)
    pairs = dens.new_zeros((*dens.shape[:-1], n_segments)).index_add_(-1, segments, dens)  # (..., K, L)
    return torch.logsumexp(pairs, dim=-2) - math.log(loc.shape[0])


def _mixture_kl(posterior: Posterior, log_prior: Callable[[Tensor], Tensor], loc: Tensor, log_var: Tensor,
                method: str, n_mc: int, chunk_size: int, segments: Optional[Tensor] = None,
                n_segments: int = 1) -> Tensor:
    """The estimator of :func:`mixture_kl`, summed over independent mixtures laid side by side (``segments``)."""
    n_comp, dim = loc.shape
    m = -(-n_mc // n_comp)

    def draws_sum(leaves, k):
        loc_, log_var_ = leaves
        with torch.no_grad():
            xi = posterior.sample_noise(k, (n_comp, dim), device=loc.device, dtype=loc.dtype)
        scale = torch.exp(0.5 * log_var_)
        z = loc_ + scale * xi  # (k, K, D): z[:, c] is drawn from component c
        log_q = (mixture_log_prob(posterior, z, loc_, scale) if segments is None
                 else _segment_log_prob(posterior, z, loc_, scale, segments, n_segments))
        return log_q.sum() - log_prior(z).sum()

    if method not in ("repar", "direct"):
        raise ValueError(f"mixture_kl: method must be 'repar' or 'direct', got {method!r}")
    if method == "direct" or m == 1:
        # One draw per component: the whole estimator is one chunk of the size of the parameters, so building it
        # in the graph costs no more memory than the surrogate (and saves its separate backward pass).
        return draws_sum((loc, log_var), m) / (m * n_comp)
    chunk = chunk_length(m, n_comp * n_comp * dim, chunk_size)
    return surrogate_mean(draws_sum, (loc, log_var), m, chunk) / n_comp


def mixture_kl(posterior: Posterior, prior: Prior, loc: Tensor, log_var: Tensor, method: str = "repar",
               n_mc: int = 100, chunk_size: int = 32) -> Tensor:
    """``KL(q || p) = E_q[log q(z) - log p(z)]`` for the mixture of :func:`mixture_log_prob` with
    ``scale = exp(log_var / 2)`` (``loc``, ``log_var``: ``(K, D)``) and a prior ``p`` independent per element.

    Both terms are estimated (a mixture's entropy has no closed form either), with the draws stratified over
    the components: ``E_q[f] = (1/K) sum_k E_{q_k}[f]``, each component drawn ``m = ceil(n_mc / K)`` times
    (``z = loc_k + scale_k xi``, reparameterised), so the estimator is unbiased for every ``n_mc >= 1`` and uses at
    least ``n_mc`` draws. ``method``:

    * ``"direct"``: every draw in the autograd graph (memory grows with ``n_mc``); the reference.
    * ``"repar"``: the same estimator through :func:`autobayes.kl.repar.surrogate_mean`, chunk by chunk, so
      the graph holds the ``(K, D)`` parameters only; the same law, value and gradient, as ``"direct"`` (with one
      chunk, the same numbers from the same random stream). With one draw per component (``n_mc <= K``) the
      draws are themselves of the parameters' size, and ``repar`` builds them in the graph as ``direct`` does.

    Example:
        >>> from autobayes.posteriors import Rank1
        >>> from autobayes.priors import Normal
        >>> loc, log_var = torch.ones(4, 6), torch.full((4, 6), -4.0)
        >>> float(mixture_kl(Rank1(), Normal(1.0, 1.0), loc, log_var, "repar", n_mc=64)) > 0
        True
    """
    return _mixture_kl(posterior, prior.log_prob, loc, log_var, method, n_mc, chunk_size)


def _fusable(p: MixtureTensor) -> bool:
    return (p.factor_loc is not None and isinstance(p.prior, Normal) and not p.prior.loc.dim()
            and not p.prior.scale.dim())


def fused_mixture_kl(params: Sequence[MixtureTensor]) -> List[Tensor]:
    """The KLs of rank-1 tensors, summed per group: the tensors with a scalar Normal prior and the same family,
    number of components, estimator, ``n_mc``, device and dtype are laid side by side and estimated at once
    (one set of operations for the whole group, however many layers); the others by their own ``kl()``.

    The sum of the group's estimates has the law of the sum of :func:`mixture_kl` of each tensor (independent
    draws, the same per-tensor mixtures: ``log q`` is summed within a tensor's columns before the log-sum-exp
    over its components), so fusing changes the cost, never the estimator.

    Example:
        >>> from autobayes import BayesConfig, BayesParameter
        >>> cfg = BayesConfig(posterior="rank1", components=2)
        >>> ps = [BayesParameter(torch.randn(3, 4), cfg), BayesParameter(torch.randn(5, 2), cfg)]
        >>> [t.shape for t in fused_mixture_kl(ps)]  # one group: one (0-dim) estimate
        [torch.Size([])]
    """
    groups: Dict[tuple, List[MixtureTensor]] = {}
    terms: List[Tensor] = []
    for p in params:
        if not _fusable(p):
            terms.append(p.kl())
            continue
        key = (type(p.posterior), p.factor_loc.shape[0], p.kl_method, p.n_mc, p.mc_chunk_size,
               p.factor_loc.device, p.factor_loc.dtype)
        groups.setdefault(key, []).append(p)
    for group in groups.values():
        terms.append(group[0].kl() if len(group) == 1 else _group_kl(group))
    return terms


def _group_kl(group: Sequence[MixtureTensor]) -> Tensor:
    first = group[0]
    device = first.factor_loc.device
    widths = tuple(p.factor_loc.shape[1] for p in group)
    total = sum(widths)
    loc = torch.cat([p.factor_loc for p in group], dim=1)
    log_var = torch.cat([p.factor_log_var for p in group], dim=1)
    with torch.no_grad():  # the priors' scalars, repeated over each tensor's columns
        counts = counts_tensor(widths, device)
        segments = torch.repeat_interleave(torch.arange(len(group), device=device), counts, output_size=total)
        prior_loc = torch.repeat_interleave(torch.stack([p.prior.loc for p in group]).to(loc), counts,
                                            output_size=total)
        prior_scale = torch.repeat_interleave(torch.stack([p.prior.scale for p in group]).to(loc), counts,
                                              output_size=total)
        log_norm = (torch.log(prior_scale) + _HALF_LOG_2PI).sum()

    def log_prior(z: Tensor) -> Tensor:
        u = (z - prior_loc) / prior_scale
        return -0.5 * (u * u).sum() - log_norm * (z.numel() // z.shape[-1])

    return _mixture_kl(first.posterior, log_prior, loc, log_var, first.kl_method, first.n_mc,
                       first.mc_chunk_size, segments, len(group))
