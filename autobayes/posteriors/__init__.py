"""Posterior families (location-scale: ``w = mu + sigma * xi``), in the :data:`POSTERIORS` registry."""

from .base import POSTERIORS, Posterior, register_posterior
from .gaussian import Gaussian
from .radial import Radial, radial_noise_entropy

__all__ = ["POSTERIORS", "Posterior", "register_posterior", "Gaussian", "Radial", "radial_noise_entropy"]
