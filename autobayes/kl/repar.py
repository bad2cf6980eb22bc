"""The graph-reparameterised Monte Carlo KL estimator (Nazarovs et al., UAI 2021)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..posteriors import Posterior
from ..posteriors.base import chunk_length
from ..priors import Normal, Prior
from .closed import normal_cross_entropy

__all__ = ["repar_kl"]


def repar_kl(posterior: Posterior, prior: Prior, mu: Tensor, scale: Tensor, n_mc: int, chunk_size: int = 32) -> Tensor:
    """The ``M``-sample estimator of :func:`autobayes.kl.direct_kl`, with an autograd graph of fixed size.

    * Normal prior: the estimate depends on the noise only through the per-weight statistics
      ``a = mean_i xi_i`` and ``b = mean_i xi_i^2``, drawn by :meth:`Posterior.noise_statistics` outside the
      graph (exactly in law: two numbers per weight for the Gaussian, whatever ``M``; chunked draws for the
      Radial). The graph then holds a handful of per-weight tensors.
    * Any other prior: chunk by chunk without a graph, accumulate the estimator's value ``V`` and its
      derivatives ``g_mu = mean_i d(-log p)/dw (w_i)`` and ``g_sigma = mean_i d(-log p)/dw (w_i) * xi_i``, then
      return the surrogate ``V + <g_mu, mu - stop(mu)> + <g_sigma, sigma - stop(sigma)>``, whose value and first
      derivatives are exactly those of the ``M``-sample estimator (``sigma = exp(log_var / 2)`` stays in the
      graph, so the gradient reaches ``log_var`` by the chain rule). Chunks hold at most ``max(d, 2^20)`` noise
      elements for a ``d``-element tensor, so the memory is that of ``M = 1`` once ``d >= 2^20``; time grows
      linearly with ``M``, as for the direct estimator.

    In both cases the result has the same law as the direct estimator's, value and gradient.
    """
    shape = tuple(mu.shape)
    if isinstance(prior, Normal):
        a, b = posterior.noise_statistics(n_mc, shape, chunk_size=chunk_size, device=mu.device, dtype=mu.dtype)
        return normal_cross_entropy(mu, scale, prior, a, b) - posterior.entropy(scale)
    return _surrogate_cross_entropy(posterior, prior, mu, scale, n_mc, chunk_size) - posterior.entropy(scale)


#: Elements per chunk of the surrogate estimator (noise draws x weights). A tensor with more elements is processed
#: one draw at a time, exactly as at M = 1, so the peak memory of a model whose largest tensor has >= 2^20
#: elements does not change from M = 1 to any M; below that the chunk's temporaries stay under ~2^20 elements.
_SURROGATE_CHUNK_ELEMENTS = 1 << 20


def _surrogate_cross_entropy(posterior, prior, mu, scale, n_mc, chunk_size) -> Tensor:
    shape = tuple(mu.shape)
    numel = mu.numel()
    chunk = chunk_length(n_mc, numel, chunk_size, _SURROGATE_CHUNK_ELEMENTS)
    mu0, scale0 = mu.detach(), scale.detach()
    value = torch.zeros((), device=mu.device, dtype=mu.dtype)
    g_mu = torch.zeros_like(mu0)
    g_scale = torch.zeros_like(mu0)
    done = 0
    while done < n_mc:
        k = min(chunk, n_mc - done)
        with torch.no_grad():
            xi = posterior.sample_noise(k, shape, device=mu.device, dtype=mu.dtype)
        with torch.enable_grad():
            w = (mu0 + scale0 * xi).requires_grad_(True)
            nlp = -prior.log_prob(w).sum()
            (grad,) = torch.autograd.grad(nlp, w)
        value += nlp.detach()
        g_mu += grad.sum(0)
        g_scale += (grad * xi).sum(0)
        done += k
    value, g_mu, g_scale = value / n_mc, g_mu / n_mc, g_scale / n_mc
    return value + (g_mu * (mu - mu0)).sum() + (g_scale * (scale - scale0)).sum()
