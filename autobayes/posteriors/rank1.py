"""Rank-1 mixture posteriors (Dusenberry et al., ICML 2020): ``W o (r s^T)`` with ``r``, ``s`` random."""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

from .._random import randn
from ..errors import ConfigError
from .base import Posterior, register_posterior

__all__ = ["Rank1", "Rank1Cauchy"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@register_posterior("rank1")
class Rank1(Posterior):
    """Rank-1 Bayesian neural network posterior with a mixture of ``K`` Gaussian components.

    A weight tensor ``W`` (shape ``(d0, d1, ...)``: out x in for a linear layer or a convolution, in x out for a
    transposed convolution) is a point estimate; the weight the layer uses is ``W o (r s^T)`` with ``r`` over
    dim 0 and ``s`` over dim 1 (broadcast over a kernel's spatial dims), and ``z = (r, s)`` drawn from the
    mixture ``q(z) = (1/K) sum_k N(z; m_k, diag(sigma_k^2))``. The prior is the configured family (a Normal by
    default) centred at 1, independent per element of ``r`` and ``s``; ``W`` has none (a point estimate: weight
    decay is the optimiser's). The component means start spread around 1 (``factor_init_std``, 0.5 by default:
    the components start as different networks) with an average of exactly 1, so the converted model's posterior
    mean is the deterministic model (:func:`autobayes.nn.rank1.balanced_spread`). A 1-d tensor (a bias) is a point estimate
    with no factor, as in the paper.

    Forward modes (:class:`autobayes.nn.BayesLayer`): ``"local"`` (the default) is the paper's batch split:
    example ``i`` of a batch of ``B`` uses component ``(floor(i K / B) + o) mod K``, with one offset ``o`` per
    forward shared by every layer (a component is a whole network), and its own draw of ``r``, ``s``; computed as
    ``op(x o s, W) o r + b``, exactly the per-example weights ``W o (r s^T)``. ``"sample"``: one component and one
    draw shared by the batch. ``"mean"``: ``W o mean_k(m_k^r m_k^s^T)``, the posterior mean.

    The KL of a mixture has no closed form: ``kl="repar"`` (the default) and ``"direct"`` estimate
    ``E_q[log q(z) - log p(z)]`` by Monte Carlo, entropy included (:func:`autobayes.kl.mixture_kl`).
    """

    default_forward = "local"
    multiplicative = True

    @classmethod
    def check_config(cls, config) -> None:
        if config.kl == "closed":
            raise ConfigError(
                f"posterior={cls.name!r} is a mixture: its KL has no closed form; use kl='repar' (the default "
                f"through kl='auto') or kl='direct'"
            )
        if config.prior_loc != 0.0:
            raise ConfigError(
                f"posterior={cls.name!r} puts its prior on the factors r and s, always centred at 1 (the "
                f"deterministic network); W is a point estimate with no prior, so prior_loc={config.prior_loc!r} "
                f"has no meaning here: leave prior_loc at its default (set prior_scale for the prior's width)"
            )

    def sample_noise(self, n: int, shape: Tuple[int, ...], *, device=None, dtype=None) -> Tensor:
        return randn((n, *shape), device=device, dtype=dtype)

    def log_density(self, z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        """Element-wise ``log N(z; loc, scale^2)`` of one component (broadcasting)."""
        u = (z - loc) / scale
        return -0.5 * u * u - torch.log(scale) - _HALF_LOG_2PI

    def noise_entropy(self, numel: int) -> float:
        return numel * (_HALF_LOG_2PI + 0.5)

    def second_moment(self, numel: int) -> float:
        return 1.0


@register_posterior("rank1_cauchy")
class Rank1Cauchy(Rank1):
    """:class:`Rank1` with Cauchy components ``Cauchy(m_k, sigma_k)`` (the paper's heavy-tailed option).

    ``sigma_k`` is the Cauchy scale (the law has no variance: ``init_scale`` sets the scale itself), and
    ``"mean"`` mode uses the locations ``m_k`` (the medians; a Cauchy has no mean). Sampling:
    ``tan(pi (u - 1/2))`` with ``u`` uniform, kept off 0 and 1 by the dtype's epsilon.
    """

    def sample_noise(self, n: int, shape: Tuple[int, ...], *, device=None, dtype=None) -> Tensor:
        u = torch.empty((n, *shape), device=device, dtype=dtype)
        eps = torch.finfo(u.dtype).eps
        return torch.tan(math.pi * (u.uniform_(eps, 1.0 - eps) - 0.5))

    def log_density(self, z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        u = (z - loc) / scale
        return -torch.log1p(u * u) - torch.log(scale) - math.log(math.pi)

    def noise_entropy(self, numel: int) -> float:
        return numel * math.log(4.0 * math.pi)
