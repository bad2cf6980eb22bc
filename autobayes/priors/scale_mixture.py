"""The scale-mixture Gaussian prior of Blundell et al. (2015), element-wise."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError
from ._checks import check_kwargs, fmt, positive_buffer
from .base import Prior, register_prior

__all__ = ["ScaleMixture"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_GAP_FLOOR = 60.0


@register_prior("scale_mixture")
class ScaleMixture(Prior):
    """Two-component scale mixture ``p(w) = pi N(w; loc, sigma1^2) + (1 - pi) N(w; loc, sigma2^2)``
    ("Weight Uncertainty in Neural Networks", Blundell et al., 2015, eq. 7), element-wise.

    A density, not a random mask: every weight has the mixture as its prior, and

        log p(w) = logaddexp(log pi + log N(w; loc, sigma1^2), log(1 - pi) + log N(w; loc, sigma2^2)),

    computed as a log-sum-exp so that neither component underflows (``sigma2`` is typically ``e^-6``).

    ``prior_scale`` is ``sigma1``, the wide component, so ``prior_scale`` keeps its meaning of "the scale of the
    weights under the prior"; ``prior_kwargs`` holds ``pi`` (default 0.5) and ``sigma2`` (default
    ``sigma1 * e^-6``, Blundell's best MNIST settings ``-log sigma1 = 0``, ``-log sigma2 = 6``, ``pi = 1/2``).
    ``sigma1`` itself is not a keyword: set ``prior_scale``. ``prior_loc`` centres both components (Blundell: 0).
    The KL has no closed form with any posterior here (the log of a sum); ``kl="auto"`` uses ``"repar"``.

    Example:
        >>> p = ScaleMixture(torch.tensor(0.0), 1.0, pi=0.5, sigma2=math.exp(-6))
        >>> round(float(p.log_prob(torch.tensor(1.0))), 4)  # 0.5 N(1; 0, 1), the narrow part underflows
        -2.1121
    """

    def __init__(self, loc, scale, pi: float = 0.5, sigma2=None) -> None:
        super().__init__()
        self.register_buffer("loc", torch.as_tensor(loc, dtype=torch.get_default_dtype()).detach().clone())
        self.register_buffer("scale", positive_buffer(scale, "scale_mixture prior scale (sigma1)", self.loc.dtype))
        if sigma2 is None:
            sigma2 = self.scale * math.exp(-6.0)
        self.register_buffer("sigma2", positive_buffer(sigma2, "scale_mixture sigma2", self.loc.dtype))
        if isinstance(pi, bool) or not isinstance(pi, (int, float)) or not 0.0 < pi < 1.0:
            raise ConfigError(
                f"scale_mixture prior: pi (the weight of the sigma1 component) must be in (0, 1), got {pi!r}; "
                f"e.g. prior_kwargs={{'pi': 0.5, 'sigma2': 0.0025}} (pi = 1 is prior='normal')"
            )
        self.register_buffer("pi", torch.tensor(float(pi), dtype=self.loc.dtype))

    @property
    def sigma1(self) -> Tensor:
        """The wide component's standard deviation (the ``scale`` buffer, ``prior_scale``)."""
        return self.scale

    @classmethod
    def from_config(cls, loc: Tensor, scale: float, **kwargs) -> "ScaleMixture":
        if "sigma1" in kwargs:
            raise ConfigError(
                "scale_mixture prior: sigma1 is prior_scale; set prior_scale=SIGMA1 instead of "
                "prior_kwargs={'sigma1': ...} (prior_kwargs takes 'pi' and 'sigma2')"
            )
        check_kwargs("scale_mixture", kwargs, ("pi", "sigma2"))
        return cls(loc, scale, **kwargs)

    def log_prob(self, w: Tensor) -> Tensor:
        d = w - self.loc
        sq = d * d
        s1, s2 = self.scale, self.sigma2
        c1 = torch.log(self.pi) - torch.log(s1) - _HALF_LOG_2PI
        c2 = torch.log1p(-self.pi) - torch.log(s2) - _HALF_LOG_2PI
        a = c1 - sq * (0.5 / (s1 * s1))
        b = c2 - sq * (0.5 / (s2 * s2))
        # logaddexp(a, b) = max + log1p(exp(-|a - b|)), with -|a - b| floored at -60: torch.logaddexp and its
        # backward would make subnormal floats wherever one component is e^-87..e^-103 of the other (in float32),
        # and arithmetic on subnormals is ~100x slower on CPUs. The floor changes the log-density by < e^-60 and
        # drops a gradient term of relative weight < e^-60.
        gap = (a - b).abs().neg().clamp(min=-_LOG_GAP_FLOOR)
        return torch.maximum(a, b) + torch.log1p(torch.exp(gap))

    def extra_repr(self) -> str:
        return f"loc={fmt(self.loc)}, sigma1={fmt(self.scale)}, sigma2={fmt(self.sigma2)}, pi={float(self.pi):g}"
