"""Prior families, in the :data:`PRIORS` registry."""

from .base import PRIORS, Prior, register_prior
from .laplace import LaplacePrior
from .normal import Normal
from .scale_mixture import ScaleMixture
from .student_t import StudentT

__all__ = ["PRIORS", "Prior", "register_prior", "Normal", "LaplacePrior", "StudentT", "ScaleMixture"]
