"""KL estimators: ``closed``, ``direct``, ``repar`` and ``auto``; :func:`fused_kl`, the KL of many tensors at once.

The KL of a layer is ``KL(q || p) = E_q[log q(w)] - E_q[log p(w)]`` summed (never averaged) over every weight.
For the location-scale posteriors here ``E_q[log q] = -H(q)`` is exact, so the Monte Carlo estimators only
estimate the cross-entropy ``-E_q[log p(w)]`` with ``M = n_mc`` samples. A mixture posterior (the rank-1
family's factors) has neither term in closed form: :func:`mixture_kl` estimates both, ``repar`` or ``direct``.
"""

from __future__ import annotations

from torch import Tensor

from ..posteriors import Posterior
from ..priors import Prior
from ..registry import Registry
from .closed import closed_kl, has_closed_form, normal_cross_entropy, register_closed_kl, require_closed_form
from .direct import direct_kl
from .fused import fused_kl, sum_kl
from .mixture import fused_mixture_kl, mixture_kl, mixture_log_prob
from .repar import repar_kl, surrogate_mean

__all__ = [
    "KL_ESTIMATORS",
    "kl_divergence",
    "resolve_kl_method",
    "closed_kl",
    "direct_kl",
    "repar_kl",
    "mixture_kl",
    "mixture_log_prob",
    "fused_mixture_kl",
    "surrogate_mean",
    "fused_kl",
    "sum_kl",
    "has_closed_form",
    "require_closed_form",
    "register_closed_kl",
    "normal_cross_entropy",
]

#: name -> ``fn(posterior, prior, mu, scale, n_mc, chunk_size) -> Tensor``
KL_ESTIMATORS: Registry = Registry("kl method")
KL_ESTIMATORS.register("closed", lambda posterior, prior, mu, scale, n_mc, chunk_size: closed_kl(posterior, prior, mu, scale))
KL_ESTIMATORS.register("direct", lambda posterior, prior, mu, scale, n_mc, chunk_size: direct_kl(posterior, prior, mu, scale, n_mc))
KL_ESTIMATORS.register("repar", repar_kl)


def resolve_kl_method(method: str, posterior: Posterior, prior: Prior) -> str:
    """``"auto"`` -> ``"closed"`` where the pair has a closed form (the zero-variance limit of the Monte Carlo
    estimators), else ``"repar"``; other names are returned unchanged."""
    if method == "auto":
        return "closed" if has_closed_form(posterior, prior) else "repar"
    return method


def kl_divergence(
    posterior: Posterior, prior: Prior, mu: Tensor, scale: Tensor, method: str = "auto", n_mc: int = 100, chunk_size: int = 32
) -> Tensor:
    """``KL(q || p)`` of one weight tensor with posterior mean ``mu`` and scale ``scale``, summed over elements.

    Example:
        >>> import torch
        >>> from autobayes.posteriors import Gaussian
        >>> from autobayes.priors import Normal
        >>> mu, scale = torch.zeros(3), torch.ones(3)
        >>> float(kl_divergence(Gaussian(), Normal(0.0, 1.0), mu, scale, "closed"))
        0.0
    """
    fn = KL_ESTIMATORS.get(resolve_kl_method(method, posterior, prior))
    return fn(posterior, prior, mu, scale, n_mc, chunk_size)
