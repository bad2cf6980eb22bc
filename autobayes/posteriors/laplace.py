"""Laplace posterior: xi ~ Laplace(0, 1), independent per weight."""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

from .base import Posterior, register_posterior

__all__ = ["Laplace"]

_ENTROPY = 1.0 + math.log(2.0)


@register_posterior("laplace")
class Laplace(Posterior):
    """Mean-field Laplace, ``w = mu + sigma * xi`` with ``xi ~ Laplace(0, 1)`` (density ``exp(-|x|) / 2``).

    ``sigma`` is the Laplace scale ``b`` of each weight, not its standard deviation: ``E[xi^2] = 2``, so the
    per-weight variance is ``2 sigma^2`` (``init_scale=s`` starts ``sigma`` at ``s / sqrt(2)``). The noise entropy
    is ``1 + log 2`` per element.

    Forward modes: ``"sample"`` (the default) is exact: one weight tensor drawn per forward, shared by the batch.
    ``"local"`` is a moment-matched approximation: each output unit is treated as Gaussian with the Laplace
    posterior's mean and variance (a sum of many independent Laplace terms is close to Gaussian, but not equal).

    Sampling: ``xi = -sign(u) log(1 - |u|)`` with ``u`` uniform on ``(-1, 1)`` (``|u|`` uniform and independent
    of the sign), the inverse CDF as in ``torch.distributions.Laplace``; ``u`` is kept off ``+-1`` by the
    dtype's epsilon, which truncates the tails at ``|xi| ~ 16`` in float32 (probability ~1e-7).
    """

    default_forward = "sample"
    elementwise = True

    def sample_noise(self, n: int, shape: Tuple[int, ...], *, device=None, dtype=None) -> Tensor:
        u = torch.empty((n, *shape), device=device, dtype=dtype)
        u.uniform_(torch.finfo(u.dtype).eps - 1.0, 1.0)
        return u.sign().neg_().mul_(torch.log1p(u.abs().neg_()))

    def noise_entropy(self, numel: int) -> float:
        return numel * _ENTROPY

    def second_moment(self, numel: int) -> float:
        return 2.0
