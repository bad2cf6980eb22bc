"""Closed-form KL divergences, dispatched on the (posterior, prior) pair as in ``torch.distributions.kl``."""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..errors import NoClosedFormError
from ..posteriors import Gaussian, Laplace, Logistic, Posterior, Radial
from ..priors import LaplacePrior, Normal, Prior

__all__ = [
    "register_closed_kl",
    "closed_kl",
    "lookup_closed_form",
    "require_closed_form",
    "has_closed_form",
    "normal_cross_entropy",
    "location_scale_normal_kl",
]

_CLOSED: Dict[Tuple[type, type], Callable] = {}


def register_closed_kl(posterior_type: type, prior_type: type):
    """Decorator registering ``fn(posterior, prior, mu, scale) -> Tensor`` as the closed-form KL of a pair.

    Example:
        >>> @register_closed_kl(MyPosterior, MyPrior)  # doctest: +SKIP
        ... def _kl(posterior, prior, mu, scale):
        ...     ...
    """

    def _add(fn: Callable) -> Callable:
        _CLOSED[(posterior_type, prior_type)] = fn
        return fn

    return _add


def lookup_closed_form(posterior: Posterior, prior: Prior) -> Optional[Callable]:
    """The registered closed form of the pair (the most derived match), or ``None``.

    Example:
        >>> lookup_closed_form(Gaussian(), Normal(0.0, 1.0)) is location_scale_normal_kl
        True
    """
    for pc in type(posterior).__mro__:
        for rc in type(prior).__mro__:
            fn = _CLOSED.get((pc, rc))
            if fn is not None:
                return fn
    return None


def has_closed_form(posterior: Posterior, prior: Prior) -> bool:
    """Whether the pair has a registered closed form."""
    return lookup_closed_form(posterior, prior) is not None


def require_closed_form(posterior: Posterior, prior: Prior) -> Callable:
    """The closed form of the pair, or a :class:`NoClosedFormError` naming the estimators that do work."""
    fn = lookup_closed_form(posterior, prior)
    if fn is None:
        pairs = sorted(f"{p.__name__}/{r.__name__}" for p, r in _CLOSED)
        raise NoClosedFormError(
            f"no closed-form KL for the {type(posterior).__name__} posterior with the {type(prior).__name__} prior "
            f"(closed forms exist for {pairs}); use kl='repar' (constant-memory Monte Carlo) or kl='auto', "
            f"which picks it for you"
        )
    return fn


def closed_kl(posterior: Posterior, prior: Prior, mu: Tensor, scale: Tensor) -> Tensor:
    """The exact ``KL(q || p)`` summed over the tensor's elements."""
    return require_closed_form(posterior, prior)(posterior, prior, mu, scale)


def normal_cross_entropy(mu: Tensor, scale: Tensor, prior: Normal, a, b) -> Tensor:
    """``-(1/M) sum_i log N(mu + scale * xi_i; m, s^2)`` summed over elements, given the per-element noise
    statistics ``a = mean_i xi_i`` and ``b = mean_i xi_i^2`` (or their expectations ``0`` and ``E[xi^2]``).

    Expanding the square, ``(mu - m + scale xi)^2`` averages to
    ``(mu - m)^2 + 2 (mu - m) scale a + scale^2 b = (mu - m + scale a)^2 + scale^2 (b - a^2)``; the second form
    needs fewer passes over the tensors (``b - a^2 >= 0`` is a constant of the graph).
    """
    if isinstance(a, Tensor):
        shifted = mu - prior.loc + scale * a
        with torch.no_grad():
            spread = b - a * a
        quad = shifted * shifted + scale * scale * spread
    else:
        diff = mu - prior.loc
        quad = diff * diff + (b - a * a) * (scale * scale)
    if prior.scale.dim() == 0:
        const = torch.log(prior.scale) + 0.5 * math.log(2.0 * math.pi)
        return quad.sum() / (2.0 * prior.scale * prior.scale) + mu.numel() * const
    per = torch.log(prior.scale) + 0.5 * math.log(2.0 * math.pi) + quad / (2.0 * prior.scale * prior.scale)
    return per.sum() if per.shape == mu.shape else per.expand(mu.shape).sum()


@register_closed_kl(Gaussian, Normal)
@register_closed_kl(Radial, Normal)
def location_scale_normal_kl(posterior: Posterior, prior: Normal, mu: Tensor, scale: Tensor) -> Tensor:
    """KL of a zero-mean location-scale posterior to a Normal prior.

    The cross-entropy needs only ``E[xi_j] = 0`` and ``E[xi_j^2]`` (1 for the Gaussian, ``1/d`` for the Radial),
    and the entropy is exact, ``sum(log sigma) + h(xi)`` (see :meth:`Posterior.entropy`). For the Gaussian this
    is the familiar ``log(s / sigma) + (sigma^2 + (mu - m)^2) / (2 s^2) - 1/2`` per weight.
    """
    m2 = posterior.second_moment(mu.numel())
    return normal_cross_entropy(mu, scale, prior, 0.0, m2) - posterior.entropy(scale)


# --------------------------------------------------------------------------- more posteriors and priors
# Laplace (E[xi^2] = 2) and logistic (E[xi^2] = pi^2 / 3) noise is zero-mean: the Normal-prior cross-entropy
# needs only E[xi] = 0 and E[xi^2] (expand the square), so location_scale_normal_kl's derivation applies unchanged.
register_closed_kl(Laplace, Normal)(location_scale_normal_kl)
register_closed_kl(Logistic, Normal)(location_scale_normal_kl)


def _laplace_prior_kl(posterior: Posterior, prior: LaplacePrior, mu: Tensor, scale: Tensor, abs_mean) -> Tensor:
    """``sum_j [log(2 b) + E|w_j - m| / b] - H(q)`` given ``abs_mean(d, s) = E|d + s xi|`` per element."""
    d = mu - prior.loc
    if d.shape != mu.shape:
        d = d.expand(mu.shape)
    per = torch.log(2.0 * prior.scale) + abs_mean(d, scale) / prior.scale
    per = per if per.shape == mu.shape else per.expand(mu.shape)
    return per.sum() - posterior.entropy(scale)


@register_closed_kl(Gaussian, LaplacePrior)
def _gaussian_laplace(posterior: Gaussian, prior: LaplacePrior, mu: Tensor, scale: Tensor) -> Tensor:
    """KL of a Gaussian posterior to a Laplace prior ``Laplace(m, b)``.

    ``-log p(w) = log(2 b) + |w - m| / b``, and ``|w - m|`` with ``w - m ~ N(d, s^2)``, ``d = mu - m``, is
    folded normal, with mean ``E|d + s z| = s sqrt(2 / pi) exp(-d^2 / (2 s^2)) + d erf(d / (s sqrt 2))``
    (split the integral at ``z = -d / s``: ``2 s phi(d / s) + d (1 - 2 Phi(-d / s))``). So per weight

        KL = log(2 b) + [s sqrt(2 / pi) exp(-d^2 / 2 s^2) + d erf(d / (s sqrt 2))] / b - log s - log(2 pi e) / 2.
    """

    def abs_mean(d, s):
        return s * math.sqrt(2.0 / math.pi) * torch.exp(-0.5 * (d / s) ** 2) + d * torch.erf(d / (s * math.sqrt(2.0)))

    return _laplace_prior_kl(posterior, prior, mu, scale, abs_mean)


@register_closed_kl(Laplace, LaplacePrior)
def _laplace_laplace(posterior: Laplace, prior: LaplacePrior, mu: Tensor, scale: Tensor) -> Tensor:
    """KL of a Laplace posterior ``Laplace(mu, s)`` to a Laplace prior ``Laplace(m, b)``.

    With ``Y = d + s xi ~ Laplace(d, s)``, ``d = mu - m``: ``E|Y| = |d| + s exp(-|d| / s)`` (for ``d >= 0``,
    ``E|Y| = E[Y] + 2 E[max(-Y, 0)] = d + 2 * (s / 2) e^{-d / s}``, the mass below 0 being an exponential tail
    of weight ``e^{-d/s} / 2`` and mean depth ``s``; symmetric in ``d``). With ``H(q) = log(2 s) + 1``:

        KL = log(b / s) + (|d| + s exp(-|d| / s)) / b - 1,

    the textbook Laplace-Laplace KL; it is continuously differentiable at ``d = 0``.
    """

    def abs_mean(d, s):
        a = d.abs()
        return a + s * torch.exp(-a / s)

    return _laplace_prior_kl(posterior, prior, mu, scale, abs_mean)


@register_closed_kl(Logistic, LaplacePrior)
def _logistic_laplace(posterior: Logistic, prior: LaplacePrior, mu: Tensor, scale: Tensor) -> Tensor:
    """KL of a logistic posterior ``Logistic(mu, s)`` to a Laplace prior ``Laplace(m, b)``.

    With ``Y = d + s xi``, ``d = mu - m``: ``E[max(Y, 0)] = s softplus(d / s)`` (its derivative in ``d`` is
    ``P(Y > 0) = sigmoid(d / s)`` and it vanishes as ``d -> -inf``), so
    ``E|Y| = 2 E[max(Y, 0)] - E[Y] = 2 s softplus(d / s) - d``. With ``H(q) = log s + 2``:

        KL = log(2 b) + (2 s softplus(d / s) - d) / b - log s - 2.
    """

    def abs_mean(d, s):
        return 2.0 * s * torch.nn.functional.softplus(d / s) - d

    return _laplace_prior_kl(posterior, prior, mu, scale, abs_mean)
