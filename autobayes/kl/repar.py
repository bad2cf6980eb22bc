"""The graph-reparameterised Monte Carlo KL estimator (Nazarovs et al., UAI 2021)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..posteriors import Posterior
from ..posteriors.base import chunk_length
from ..priors import Normal, Prior
from .closed import normal_cross_entropy

__all__ = ["repar_kl", "surrogate_mean"]


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
    chunk = chunk_length(n_mc, mu.numel(), chunk_size, _SURROGATE_CHUNK_ELEMENTS)

    def neg_log_prior(leaves, k):
        with torch.no_grad():
            xi = posterior.sample_noise(k, shape, device=mu.device, dtype=mu.dtype)
        return -prior.log_prob(leaves[0] + leaves[1] * xi).sum()

    return surrogate_mean(neg_log_prior, (mu, scale), n_mc, chunk)


def surrogate_mean(draws_sum: Callable[[Sequence[Tensor], int], Tensor], params: Sequence[Tensor], n: int,
                   chunk: int) -> Tensor:
    """The mean of ``n`` Monte Carlo terms as a graph of fixed size: the graph-reparameterisation trick.

    ``draws_sum(leaves, k)`` draws ``k`` terms and returns their sum, computed from ``leaves`` (detached copies of
    ``params`` that require grad). The terms are evaluated ``chunk`` at a time, each chunk's graph freed once its
    gradient is taken; the result ``V + sum_p <g_p, p - stop(p)>`` has the value ``V`` and the gradients ``g_p``
    of the ``n``-term mean (so the same law, value and gradient, as building all ``n`` terms in the graph),
    while the caller's graph holds only the parameters.

    Example:
        >>> mu = torch.zeros(3, requires_grad=True)
        >>> est = surrogate_mean(lambda ls, k: ((ls[0] + torch.randn(k, 3)) ** 2).sum(), (mu,), 100, 10)
        >>> est.backward(); mu.grad.abs().max() < 1.0
        tensor(True)
    """
    leaves = [p.detach().requires_grad_(True) for p in params]
    value = torch.zeros((), device=leaves[0].device, dtype=leaves[0].dtype)
    grads = [torch.zeros_like(leaf) for leaf in leaves]
    done = 0
    while done < n:
        k = min(chunk, n - done)
        with torch.enable_grad():
            total = draws_sum(leaves, k)
            for g, d in zip(grads, torch.autograd.grad(total, leaves, allow_unused=True)):
                if d is not None:
                    g += d
        value += total.detach()
        done += k
    out = value / n
    for p, g in zip(params, grads):
        out = out + ((g / n) * (p - p.detach())).sum()
    return out
