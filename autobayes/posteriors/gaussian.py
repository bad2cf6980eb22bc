"""Gaussian posterior: xi ~ N(0, I), independent per weight."""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

from .._random import randn, standard_gamma
from .base import Posterior, register_posterior

__all__ = ["Gaussian"]

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
    elementwise = True

    def sample_noise(self, n: int, shape: Tuple[int, ...], *, device=None, dtype=None) -> Tensor:
        return randn((n, *shape), device=device, dtype=dtype)

    def noise_entropy(self, numel: int) -> float:
        return numel * _HALF_LOG_2PI_E

    def second_moment(self, numel: int) -> float:
        return 1.0

    def noise_statistics(self, n_mc, shape, *, chunk_size=32, device=None, dtype=None):
        with torch.no_grad():
            z = randn(shape, device=device, dtype=dtype)
            if n_mc == 1:
                return z, z * z
            # b = (z^2 + c) / M with c ~ chi2(M - 1) = 2 Gamma((M - 1) / 2, 1), built in place
            b = standard_gamma(0.5 * (n_mc - 1), shape, device=z.device, dtype=z.dtype)
            b.mul_(2.0).addcmul_(z, z).div_(n_mc)
            return z.div_(math.sqrt(n_mc)), b
