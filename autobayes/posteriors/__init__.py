"""Posterior families (location-scale: ``w = mu + sigma * xi``; rank-1 mixtures: ``W o (r s^T)``), in the
:data:`POSTERIORS` registry."""

from .base import POSTERIORS, Posterior, register_posterior
from .gaussian import Gaussian
from .laplace import Laplace
from .logistic import Logistic
from .radial import Radial, radial_noise_entropy
from .rank1 import Rank1, Rank1Cauchy

__all__ = [
    "POSTERIORS",
    "Posterior",
    "register_posterior",
    "Gaussian",
    "Radial",
    "Laplace",
    "Logistic",
    "radial_noise_entropy",
    "Rank1",
    "Rank1Cauchy",
]
