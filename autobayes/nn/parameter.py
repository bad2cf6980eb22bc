"""`BayesParameter`: the variational posterior (and prior) of one weight tensor."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..config import BayesConfig
from ..kl import kl_divergence, require_closed_form, resolve_kl_method
from ..posteriors import POSTERIORS
from ..priors import PRIORS

__all__ = ["BayesParameter"]

_MIN_SCALE = 1e-8


class BayesParameter(nn.Module):
    """The posterior ``q(w) : w = mu + sigma * xi`` of one tensor, with its prior and KL settings.

    Parameters: ``mu`` (the posterior mean) and ``log_var`` (``log sigma^2``, per element). The prior is the
    submodule ``prior`` (its tensors are buffers, saved in the state dict).

    Calling the module returns a weight sample (one draw of the posterior) or, under
    :func:`autobayes.use_mean`, the posterior mean: this is what replaces a raw parameter read in a traced
    graph (a weight used functionally, e.g. ``F.linear(x, self.weight)``).

    Args:
        mean: the initial posterior mean (a converted layer's weights, or a fresh initialisation).
        config: the layer's :class:`BayesConfig`.
        from_weights: ``mean`` holds trained weights; ``moped_delta`` then applies.

    Example:
        >>> p = BayesParameter(torch.zeros(3, 4), BayesConfig(posterior="gaussian", kl="closed"))
        >>> p().shape, p.kl().dim()
        (torch.Size([3, 4]), 0)
    """

    per_example_noise = False

    def __init__(self, mean: Tensor, config: BayesConfig, *, from_weights: bool = False) -> None:
        super().__init__()
        mean = mean.detach()
        self.mu = nn.Parameter(mean.clone())
        self.log_var = nn.Parameter(_initial_log_var(mean, config, from_weights))
        self.posterior = POSTERIORS.get(config.posterior)()
        loc = mean.clone() if config.prior_loc == "weights" else torch.tensor(float(config.prior_loc), dtype=mean.dtype)
        self.prior = PRIORS.get(config.prior).from_config(
            loc.to(mean.device), config.prior_scale, **config.prior_kwargs
        ).to(device=mean.device, dtype=mean.dtype)
        self.kl_method = resolve_kl_method(config.kl, self.posterior, self.prior)
        if config.kl == "closed":  # fail at conversion time, not at the first forward
            require_closed_form(self.posterior, self.prior)
        self.n_mc = config.n_mc
        self.mc_chunk_size = config.mc_chunk_size
        self.use_mean = False

    @property
    def scale(self) -> Tensor:
        """Posterior scale ``sigma = exp(log_var / 2)``."""
        return torch.exp(0.5 * self.log_var)

    @property
    def variance(self) -> Tensor:
        """Per-element posterior variance ``sigma^2 E[xi_j^2]``."""
        m2 = self.posterior.second_moment(self.mu.numel())
        return torch.exp(self.log_var) if m2 == 1.0 else torch.exp(self.log_var) * m2

    def sample(self) -> Tensor:
        """One draw ``mu + sigma * xi`` (differentiable in ``mu`` and ``log_var``)."""
        xi = self.posterior.sample_noise(1, tuple(self.mu.shape), device=self.mu.device, dtype=self.mu.dtype)[0]
        return torch.addcmul(self.mu, self.scale, xi)

    def forward(self) -> Tensor:
        return self.mu if self.use_mean else self.sample()

    def kl(self) -> Tensor:
        """``KL(q || p)`` of this tensor (summed over its elements), by the configured estimator."""
        return kl_divergence(
            self.posterior, self.prior, self.mu, self.scale, self.kl_method, self.n_mc, self.mc_chunk_size
        )

    def extra_repr(self) -> str:
        return (
            f"shape={tuple(self.mu.shape)}, posterior={self.posterior.name}, kl={self.kl_method}, n_mc={self.n_mc}"
        )


def _initial_log_var(mean: Tensor, config: BayesConfig, from_weights: bool) -> Tensor:
    if config.moped_delta is not None and from_weights:
        scale = (config.moped_delta * mean.abs()).clamp_min(_MIN_SCALE)
        return 2.0 * torch.log(scale)
    if config.init_scale is not None:
        return torch.full_like(mean, 2.0 * math.log(config.init_scale))
    low, high = config.init_log_var
    return torch.empty_like(mean).uniform_(low, high)
