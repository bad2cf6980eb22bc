"""Logistic posterior: xi ~ Logistic(0, 1), independent per weight."""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

from .base import Posterior, register_posterior

__all__ = ["Logistic"]


@register_posterior("logistic")
class Logistic(Posterior):
    """Mean-field logistic, ``w = mu + sigma * xi`` with ``xi ~ Logistic(0, 1)`` (density
    ``e^-x / (1 + e^-x)^2``, CDF the sigmoid).

    ``sigma`` is the logistic scale: ``E[xi^2] = pi^2 / 3``, so the per-weight variance is ``sigma^2 pi^2 / 3``
    (``init_scale=s`` starts ``sigma`` at ``s sqrt(3) / pi``).
    The noise entropy is exactly 2 nats per element (``h = log s + 2`` for scale ``s``).

    Forward modes: ``"sample"`` (the default) is exact: one weight tensor drawn per forward, shared by the batch.
    ``"local"`` is a moment-matched approximation that treats each output unit as Gaussian.

    Sampling: ``xi = logit(u) = log u - log(1 - u)`` with ``u`` uniform on ``(0, 1)`` (``u`` is floored at the
    smallest normal number, so ``xi`` is finite; the float32 grid of ``u`` truncates the tails at ``|xi| ~ 17``,
    probability ~1e-7).
    """

    default_forward = "sample"
    elementwise = True

    def sample_noise(self, n: int, shape: Tuple[int, ...], *, device=None, dtype=None) -> Tensor:
        u = torch.rand((n, *shape), device=device, dtype=dtype)
        u.clamp_(min=torch.finfo(u.dtype).tiny)
        return torch.log(u) - torch.log1p(-u)

    def noise_entropy(self, numel: int) -> float:
        return 2.0 * numel

    def second_moment(self, numel: int) -> float:
        return math.pi**2 / 3.0
