"""Prior families, in the :data:`PRIORS` registry."""

from .base import PRIORS, Prior, register_prior
from .normal import Normal

__all__ = ["PRIORS", "Prior", "register_prior", "Normal"]
