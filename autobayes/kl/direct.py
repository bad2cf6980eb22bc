"""The direct Monte Carlo KL estimator: the reference, whose graph grows with M."""

from __future__ import annotations

from torch import Tensor

from ..posteriors import Posterior
from ..priors import Prior

__all__ = ["direct_kl"]


def direct_kl(posterior: Posterior, prior: Prior, mu: Tensor, scale: Tensor, n_mc: int, **_: object) -> Tensor:
    """``-H(q) - (1/M) sum_i log p(w_i)`` with ``w_i = mu + scale * xi_i`` built inside the autograd graph.

    The entropy is exact for every location-scale posterior (see :meth:`Posterior.entropy`), so only the
    cross-entropy is estimated, as in the paper. The graph holds the ``M`` weight samples: memory grows
    linearly with ``M``. Use it as the reference for :func:`autobayes.kl.repar_kl`.
    """
    xi = posterior.sample_noise(n_mc, tuple(mu.shape), device=mu.device, dtype=mu.dtype)
    w = mu + scale * xi
    cross_entropy = -prior.log_prob(w).sum() / n_mc
    return cross_entropy - posterior.entropy(scale)
