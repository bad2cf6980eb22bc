"""Bayesian layers."""

from ..kl.fused import fused_kl  # the fused KL lives in autobayes.kl; re-exported here, where it was documented
from .base import BayesLayer
from .conv import (
    BayesConv1d,
    BayesConv2d,
    BayesConv3d,
    BayesConvTranspose1d,
    BayesConvTranspose2d,
    BayesConvTranspose3d,
)
from .linear import BayesLinear
from .mappings import DEFAULT_MAPPINGS, get_default_mappings
from .parameter import BayesParameter

__all__ = [
    "BayesLayer",
    "BayesParameter",
    "fused_kl",
    "BayesLinear",
    "BayesConv1d",
    "BayesConv2d",
    "BayesConv3d",
    "BayesConvTranspose1d",
    "BayesConvTranspose2d",
    "BayesConvTranspose3d",
    "DEFAULT_MAPPINGS",
    "get_default_mappings",
]
