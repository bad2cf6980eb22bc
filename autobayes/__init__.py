"""autobayes: turn any deterministic PyTorch network into a Bayesian neural network in one call."""

from .config import BayesConfig
from .errors import (
    AutobayesError,
    CheckpointError,
    ConfigError,
    NoClosedFormError,
    UnknownNameError,
    UntraceableModelError,
)
from .kl import KL_ESTIMATORS, kl_divergence, register_closed_kl
from .nn import (
    BayesConv1d,
    BayesConv2d,
    BayesConv3d,
    BayesConvTranspose1d,
    BayesConvTranspose2d,
    BayesConvTranspose3d,
    BayesLayer,
    BayesLinear,
    BayesParameter,
    get_default_mappings,
)
from .posteriors import POSTERIORS, Gaussian, Posterior, Radial, register_posterior
from .priors import PRIORS, Normal, Prior, register_prior

__version__ = "0.1.0"

__all__ = [
    # configuration and errors
    "BayesConfig",
    "AutobayesError",
    "CheckpointError",
    "ConfigError",
    "NoClosedFormError",
    "UnknownNameError",
    "UntraceableModelError",
    # layers
    "BayesLayer",
    "BayesParameter",
    "BayesLinear",
    "BayesConv1d",
    "BayesConv2d",
    "BayesConv3d",
    "BayesConvTranspose1d",
    "BayesConvTranspose2d",
    "BayesConvTranspose3d",
    "get_default_mappings",
    # posteriors, priors, KL
    "POSTERIORS",
    "Posterior",
    "Gaussian",
    "Radial",
    "register_posterior",
    "PRIORS",
    "Prior",
    "Normal",
    "register_prior",
    "KL_ESTIMATORS",
    "kl_divergence",
    "register_closed_kl",
]
