"""Radial posterior (Farquhar, Osborne and Gal, 2020)."""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

from .._random import normal_, randn
from .base import Posterior, chunk_length, register_posterior

__all__ = ["Radial", "radial_noise_entropy"]

_EULER_GAMMA = 0.5772156649015329


def radial_noise_entropy(d: int) -> float:
    """Differential entropy of the radial noise ``xi = r * eps / ||eps||`` in ``R^d``.

    ``r ~ N(0, 1)`` and ``eps ~ N(0, I_d)``; since ``sign(r) * eps / ||eps||`` is uniform on the unit sphere
    and independent of ``rho = |r|`` (half-normal, density ``2 phi(rho)``), ``xi`` has the density
    ``f(x) = 2 phi(|x|) / (S_{d-1} |x|^{d-1})`` with ``S_{d-1} = 2 pi^{d/2} / Gamma(d/2)`` the area of the
    unit sphere. Hence

        h(xi) = -E[log 2 phi(rho)] + log S_{d-1} + (d - 1) E[log rho]
              = 1/2 log(2 pi) + 1/2 + d/2 log(pi) - log Gamma(d/2) - (d - 1) (gamma + log 2) / 2,

    using ``E[rho^2] = 1`` and ``E[log rho] = -(gamma + log 2) / 2`` (gamma: Euler's constant). For ``d = 1``
    this is the standard normal's entropy. It does not depend on the parameters: Farquhar et al. drop it
    (their "entropy up to a constant", ``sum(log sigma)``); we keep it, so the reported KL is the true
    ``KL(q || p) >= 0``.
    """
    return (
        0.5 * math.log(2.0 * math.pi)
        + 0.5
        + 0.5 * d * math.log(math.pi)
        - math.lgamma(0.5 * d)
        - 0.5 * (d - 1) * (_EULER_GAMMA + math.log(2.0))
    )


@register_posterior("radial")
class Radial(Posterior):
    """Radial posterior: ``xi = r * eps / ||eps||`` with ``eps ~ N(0, I)`` over the whole weight tensor and one
    radius ``r ~ N(0, 1)`` per tensor.

    The noise is normalised over each weight tensor, so elements are uncorrelated but not independent, with
    ``E[xi_j] = 0`` and ``E[xi_j^2] = 1/d`` for a ``d``-element tensor: a weight's standard deviation is
    ``sigma / sqrt(d)``, and ``init_scale=s`` starts ``sigma`` at ``s sqrt(d)``.

    Forward modes: ``"sample"`` (the default) is exact: one weight tensor drawn per forward, shared by the batch.
    ``"local"`` is a moment-matched approximation: it treats the weights as independent Gaussians with the
    radial posterior's per-weight variance ``sigma^2 / d`` and so ignores the correlations that the
    normalisation creates.

    Monte Carlo statistics have no cheap exact law here, so :meth:`noise_statistics` draws the ``M`` noise
    tensors exactly, in vectorised chunks: memory is bounded by the chunk, time grows with ``M``.
    """

    default_forward = "sample"

    def sample_noise(self, n: int, shape: Tuple[int, ...], *, device=None, dtype=None) -> Tensor:
        eps = randn((n, math.prod(shape)), device=device, dtype=dtype)
        r = torch.randn((n, 1), device=device, dtype=dtype)
        return (eps * (r / torch.linalg.vector_norm(eps, dim=1, keepdim=True))).reshape(n, *shape)

    def sample_weights(self, mu: Tensor, scale: Tensor) -> Tensor:
        """``mu + scale * (r / ||eps||) eps``: the same draw as :meth:`sample_noise` (same random stream), with
        the scalar ``r / ||eps||`` folded into the ``addcmul`` (a pass over the tensor fewer per draw)."""
        eps = randn(tuple(mu.shape), device=mu.device, dtype=mu.dtype)
        r = torch.randn((1, 1), device=mu.device, dtype=mu.dtype)
        s = r.reshape(()) / torch.linalg.vector_norm(eps)
        if eps.device.type == "cpu" and not torch.compiler.is_compiling():
            return torch.addcmul(mu, scale, eps, value=s.item())  # a host scalar: no synchronisation on the CPU
        return torch.addcmul(mu, scale, eps.mul_(s))

    def noise_entropy(self, numel: int) -> float:
        return radial_noise_entropy(numel)

    def second_moment(self, numel: int) -> float:
        return 1.0 / numel

    def noise_statistics(self, n_mc, shape, *, chunk_size=32, device=None, dtype=None):
        numel = math.prod(shape)
        chunk = chunk_length(n_mc, numel, chunk_size)
        a = torch.zeros(numel, device=device, dtype=dtype)
        b = torch.zeros(numel, device=device, dtype=dtype)
        with torch.no_grad():
            if chunk == 1:  # a large tensor: one draw at a time, three passes over it besides the draw
                eps = torch.empty(numel, device=device, dtype=dtype)
                radii = torch.randn(n_mc, device=device, dtype=dtype)
                on_cpu = eps.device.type == "cpu"
                accumulate = _accumulate_host if on_cpu else _accumulate_device
                for r in radii.tolist() if on_cpu else radii:
                    accumulate(a, b, normal_(eps), r)
                return (a / n_mc).reshape(shape), (b / n_mc).reshape(shape)
            # Two buffers reused by every chunk (no allocation churn: the peak memory is the chunk's).
            eps_buf = torch.empty((chunk, numel), device=device, dtype=dtype)
            sq_buf = torch.empty_like(eps_buf)
            done = 0
            while done < n_mc:
                k = min(chunk, n_mc - done)
                eps, sq = eps_buf[:k], sq_buf[:k]
                normal_(eps)
                torch.mul(eps, eps, out=sq)
                # xi_i = s_i * eps_i with s_i = r_i / ||eps_i||; the sums over the chunk are two matrix-vector
                # products, one pass over the chunk each.
                s = torch.randn(k, device=device, dtype=dtype) * torch.rsqrt(sq.sum(1))
                a.addmv_(eps.t(), s)
                b.addmv_(sq.t(), s * s)
                done += k
        return (a / n_mc).reshape(shape), (b / n_mc).reshape(shape)


def _accumulate_host(a: Tensor, b: Tensor, eps: Tensor, r: float) -> None:
    """``a += s eps``, ``b += s^2 eps^2`` with ``s = r / ||eps||`` as a Python number (CPU: no extra pass)."""
    s = r / torch.linalg.vector_norm(eps).item()
    a.add_(eps, alpha=s)
    b.addcmul_(eps, eps, value=s * s)


def _accumulate_device(a: Tensor, b: Tensor, eps: Tensor, r: Tensor) -> None:
    """The same with ``s`` kept on the device: one more pass over ``eps`` (scaled in place), but no
    device-to-host synchronisation per draw."""
    eps.mul_(r / torch.linalg.vector_norm(eps))
    a.add_(eps)
    b.addcmul_(eps, eps)
