"""The location-scale posterior contract: w = mu + sigma * xi, xi drawn from a fixed noise law."""

from __future__ import annotations

import math
from typing import ClassVar, Tuple

import torch
from torch import Tensor

from ..registry import Registry

__all__ = ["Posterior", "POSTERIORS", "register_posterior", "MAX_CHUNK_ELEMENTS", "chunk_length"]

#: The most noise elements (draws x weights) one chunk of a sampled-statistics estimator holds: a tensor larger
#: than this is processed one draw at a time, so its peak memory is the same at every M.
MAX_CHUNK_ELEMENTS = 1 << 22

#: Registry of posterior families, by name.
POSTERIORS: Registry[type] = Registry("posterior")


def register_posterior(name: str):
    """Class decorator registering a :class:`Posterior` subclass under ``name``.

    Example:
        >>> @register_posterior("my_gaussian")
        ... class MyGaussian(Posterior):
        ...     def sample_noise(self, n, shape, *, device=None, dtype=None):
        ...         return torch.randn((n, *shape), device=device, dtype=dtype)
        ...     def noise_entropy(self, numel):
        ...         return 0.5 * numel * (1.0 + math.log(2 * math.pi))
        ...     def second_moment(self, numel):
        ...         return 1.0
    """

    return POSTERIORS.register_subclass(name, Posterior)


class Posterior:
    """A location-scale family over one weight tensor of ``d`` elements: ``w = mu + sigma * xi``.

    Subclasses define the noise law ``xi`` (over the whole tensor: it need not factorise over elements) through
    three methods; everything else (sampling, the exact entropy, the Monte Carlo statistics) follows.

    * :meth:`sample_noise` draws ``n`` noise tensors.
    * :meth:`noise_entropy` is the differential entropy ``h(xi)`` of the whole noise tensor, so that the
      posterior's entropy is exactly ``H(q) = sum(log sigma) + h(xi)`` (a location-scale change of variables).
      Every estimator in :mod:`autobayes.kl` uses this exact entropy; only the cross-entropy
      ``-E_q[log p(w)]`` is estimated by Monte Carlo, as in the paper.
    * :meth:`second_moment` is ``E[xi_j^2]`` per element (``E[xi_j] = 0`` for every family here); it gives the
      per-weight variance ``sigma^2 E[xi_j^2]`` used by local reparameterisation and by closed forms, and the
      initialisation: ``init_scale`` (``moped_delta``, ``init_log_var``) sets the per-weight standard deviation,
      so ``sigma = init_scale / sqrt(E[xi_j^2])`` for every family, a registered one included.

    ``default_forward`` is the forward mode ``"auto"`` resolves to for this family. ``elementwise`` declares that
    the noise is i.i.d. over elements (so ``noise_entropy`` is additive in ``numel`` and ``second_moment`` does not
    depend on it): the KL of several tensors may then be computed on their concatenation, which a model's forward
    does (:func:`autobayes.nn.fused_kl`). Leave it ``False`` for a law over the whole tensor, like the Radial.
    """

    name: ClassVar[str] = ""
    default_forward: ClassVar[str] = "local"
    elementwise: ClassVar[bool] = False
    #: ``True`` for a family that multiplies a point-estimated weight by random factors instead of adding noise
    #: to it (:class:`~autobayes.posteriors.Rank1`): its tensors are :class:`~autobayes.nn.rank1.Rank1Parameter`.
    multiplicative: ClassVar[bool] = False

    @classmethod
    def check_config(cls, config) -> None:
        """Raise :class:`~autobayes.errors.ConfigError` when ``config`` asks for something this family cannot do
        (called by :class:`~autobayes.BayesConfig` when it is built). The location-scale families accept all."""

    def sample_noise(self, n: int, shape: Tuple[int, ...], *, device=None, dtype=None) -> Tensor:
        """``n`` independent noise tensors, stacked: shape ``(n, *shape)``."""
        raise NotImplementedError

    def noise_entropy(self, numel: int) -> float:
        """Differential entropy (nats) of one noise tensor of ``numel`` elements."""
        raise NotImplementedError

    def second_moment(self, numel: int) -> float:
        """``E[xi_j^2]`` for one element of a ``numel``-element noise tensor."""
        raise NotImplementedError

    # ------------------------------------------------------------------ derived
    def sample_weights(self, mu: Tensor, scale: Tensor) -> Tensor:
        """One draw ``mu + scale * xi`` of the weights (differentiable in ``mu`` and ``scale``).

        A family may override it to fuse the draw with the affine map (the Radial does: its noise is one scalar
        times a normal vector, so the scalar goes into the ``addcmul`` instead of a pass over the tensor).
        """
        xi = self.sample_noise(1, tuple(mu.shape), device=mu.device, dtype=mu.dtype)[0]
        return torch.addcmul(mu, scale, xi)

    def entropy(self, scale: Tensor) -> Tensor:
        """Exact entropy of the posterior with per-element scale ``scale`` (any mean)."""
        return torch.log(scale).sum() + self.noise_entropy(scale.numel())

    def noise_statistics(
        self, n_mc: int, shape: Tuple[int, ...], *, chunk_size: int = 32, device=None, dtype=None
    ) -> Tuple[Tensor, Tensor]:
        """The per-element statistics ``a = mean_i xi_i`` and ``b = mean_i xi_i^2`` of ``n_mc`` noise draws.

        With a Gaussian prior the ``n_mc``-sample Monte Carlo estimate of the cross-entropy depends on the noise
        only through ``(a, b)``. This generic version draws the noise exactly, ``chunk_size`` tensors at a time
        (fewer when a tensor is large: at most :data:`MAX_CHUNK_ELEMENTS` per chunk), with no autograd graph, so memory is
        bounded by the chunk and not by ``n_mc``. Subclasses override it when ``(a, b)`` has a cheaper exact law.
        """
        numel = math.prod(shape)
        chunk = chunk_length(n_mc, numel, chunk_size)
        a = torch.zeros(numel, device=device, dtype=dtype)
        b = torch.zeros(numel, device=device, dtype=dtype)
        with torch.no_grad():
            done = 0
            while done < n_mc:
                k = min(chunk, n_mc - done)
                xi = self.sample_noise(k, shape, device=device, dtype=dtype).reshape(k, numel)
                a += xi.sum(0)
                b += (xi * xi).sum(0)
                done += k
        return (a / n_mc).reshape(shape), (b / n_mc).reshape(shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def chunk_length(n_mc: int, numel: int, chunk_size: int, max_elements: int = MAX_CHUNK_ELEMENTS) -> int:
    """How many noise draws of a ``numel``-element tensor one chunk holds (>= 1, at most ``max_elements``
    noise elements unless one draw alone is larger)."""
    return max(1, min(n_mc, chunk_size, max_elements // max(numel, 1)))
