"""Gaussian posterior: xi ~ N(0, I), independent per weight."""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

from .base import Posterior, register_posterior

__all__ = ["Gaussian", "standard_gamma"]

_HALF_LOG_2PI_E = 0.5 * (1.0 + math.log(2.0 * math.pi))


@register_posterior("gaussian")
class Gaussian(Posterior):
    """Mean-field Gaussian, ``w = mu + sigma * xi`` with ``xi ~ N(0, I)``.

    Forward modes: ``"local"`` (the default) is exact: each output unit is Gaussian with mean
    ``f(x, mu)`` and variance ``f(x^2, sigma^2)``, with independent noise per example; ``"sample"`` draws one
    weight tensor per forward, shared by the batch.

    Monte Carlo statistics: for ``M`` i.i.d. standard normal draws, ``sum_i xi_i = sqrt(M) z`` and
    ``sum_i (xi_i - a)^2 = c`` are independent with ``z ~ N(0, 1)`` and ``c ~ chi2(M - 1)``, so
    ``a = z / sqrt(M)`` and ``b = (z^2 + c) / M`` exactly. Drawing them costs two random numbers per weight
    whatever ``M`` is: time and memory are independent of ``M``.
    """

    default_forward = "local"

    def sample_noise(self, n: int, shape: Tuple[int, ...], *, device=None, dtype=None) -> Tensor:
        return torch.randn((n, *shape), device=device, dtype=dtype)

    def noise_entropy(self, numel: int) -> float:
        return numel * _HALF_LOG_2PI_E

    def second_moment(self, numel: int) -> float:
        return 1.0

    def noise_statistics(self, n_mc, shape, *, chunk_size=32, device=None, dtype=None):
        with torch.no_grad():
            z = torch.randn(shape, device=device, dtype=dtype)
            a = z / math.sqrt(n_mc)
            b = z * z
            if n_mc > 1:  # chi2(k) = 2 * Gamma(k / 2, 1)
                b = b + 2.0 * standard_gamma(0.5 * (n_mc - 1), shape, device=z.device, dtype=z.dtype)
            return a, b / n_mc


def standard_gamma(alpha: float, shape: Tuple[int, ...], *, device=None, dtype=None) -> Tensor:
    """Exact ``Gamma(alpha, 1)`` draws with one shape ``alpha`` for a whole tensor.

    On CUDA this is ``torch._standard_gamma``. On the CPU, where that kernel is single-threaded and slow, it is a
    vectorised Marsaglia-Tsang (2000) rejection sampler: propose ``d v`` with ``v = (1 + c x)^3``,
    ``x ~ N(0, 1)``, ``d = alpha - 1/3``, ``c = 1 / sqrt(9 d)``; accept at once when ``u < 1 - 0.0331 x^4`` (the
    squeeze, > 98% of draws), else by the exact test ``log u < x^2 / 2 + d - d v + d log v`` (in float64), and
    redraw the rejected. For ``alpha < 1`` it uses ``Gamma(alpha) = Gamma(alpha + 1) U^(1 / alpha)``.
    """
    dtype = dtype or torch.get_default_dtype()
    if torch.device(device or "cpu").type != "cpu":
        return torch._standard_gamma(torch.full(shape, float(alpha), device=device, dtype=dtype))
    n = math.prod(shape)
    boost = alpha < 1.0
    d = (alpha + 1.0 if boost else alpha) - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)

    def propose(k: int):
        x = torch.randn(k, device=device, dtype=dtype)
        v = x.mul(c).add_(1.0)
        return x.mul_(x), v * v * v, torch.rand(k, device=device, dtype=dtype)

    x2, v, u = propose(n)
    left = ((u >= 1.0 - 0.0331 * x2 * x2) | (v <= 0)).nonzero().squeeze(1)
    while left.numel():
        xl, vl, ul = x2[left].double(), v[left].double(), u[left].double()
        accept = (vl > 0) & (torch.log(ul) < 0.5 * xl + d - d * vl + d * torch.log(vl.clamp_min(1e-300)))
        left = left[~accept]
        if left.numel():
            x2[left], v[left], u[left] = propose(left.numel())
    out = v.mul_(d)
    if boost:
        out = out * torch.rand(n, device=device, dtype=dtype).pow_(1.0 / alpha)
    return out.reshape(shape)
