"""The Monte Carlo KL of a mixture posterior (the rank-1 family's factors), which has no closed form."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..posteriors import Posterior
from ..posteriors.base import chunk_length
from ..priors import Prior
from .repar import surrogate_mean

__all__ = ["mixture_kl", "mixture_log_prob"]


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
      chunk, the same numbers from the same random stream).

    Example:
        >>> from autobayes.posteriors import Rank1
        >>> from autobayes.priors import Normal
        >>> loc, log_var = torch.ones(4, 6), torch.full((4, 6), -4.0)
        >>> float(mixture_kl(Rank1(), Normal(1.0, 1.0), loc, log_var, "repar", n_mc=64)) > 0
        True
    """
    n_comp, dim = loc.shape
    m = -(-n_mc // n_comp)

    def draws_sum(leaves, k):
        loc_, log_var_ = leaves
        with torch.no_grad():
            xi = posterior.sample_noise(k, (n_comp, dim), device=loc.device, dtype=loc.dtype)
        scale = torch.exp(0.5 * log_var_)
        z = loc_ + scale * xi  # (k, K, D): z[:, c] is drawn from component c
        return (mixture_log_prob(posterior, z, loc_, scale) - prior.log_prob(z).sum(-1)).sum()

    if method == "direct":
        return draws_sum((loc, log_var), m) / (m * n_comp)
    if method != "repar":
        raise ValueError(f"mixture_kl: method must be 'repar' or 'direct', got {method!r}")
    chunk = chunk_length(m, n_comp * n_comp * dim, chunk_size)
    return surrogate_mean(draws_sum, (loc, log_var), m, chunk) / n_comp
