"""Student-t prior t_df(loc, scale), element-wise."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError
from ._checks import check_kwargs, fmt, positive_buffer
from .base import Prior, register_prior

__all__ = ["StudentT"]


@register_prior("student_t")
class StudentT(Prior):
    """Element-wise Student-t with ``df`` degrees of freedom, location ``loc`` and scale ``s``:

        log p(w) = lgamma((df + 1) / 2) - lgamma(df / 2) - log(df pi) / 2 - log s
                   - (df + 1) / 2 * log(1 + ((w - loc) / s)^2 / df).

    ``prior_scale`` is ``s``; ``df`` (> 0, default 3: heavy tails with a finite variance
    ``s^2 df / (df - 2)``) is the one option of ``prior_kwargs``. It is the marginal of ``w ~ N(loc, s^2 / g)``
    with ``g ~ Gamma(df / 2, rate=df / 2)``: a continuous scale mixture of Normals, a heavy-tailed prior
    (Fortuin et al., 2022, found such priors suit fully connected networks). ``df -> inf`` is the Normal.

    Example:
        >>> p = StudentT(torch.tensor(0.0), 1.0, df=1.0)  # the Cauchy
        >>> round(float(p.log_prob(torch.zeros(()))), 6)  # -log pi
        -1.14473
    """

    def __init__(self, loc, scale, df: float = 3.0) -> None:
        super().__init__()
        self.register_buffer("loc", torch.as_tensor(loc, dtype=torch.get_default_dtype()).detach().clone())
        self.register_buffer("scale", positive_buffer(scale, "student_t prior scale", self.loc.dtype))
        if isinstance(df, bool) or not isinstance(df, (int, float)) or not (math.isfinite(df) and df > 0):
            raise ConfigError(f"student_t prior: df must be a finite number > 0, got {df!r}; e.g. prior_kwargs={{'df': 3.0}}")
        self.register_buffer("df", torch.tensor(float(df), dtype=self.loc.dtype))

    @classmethod
    def from_config(cls, loc: Tensor, scale: float, **kwargs) -> "StudentT":
        check_kwargs("student_t", kwargs, ("df",))
        return cls(loc, scale, **kwargs)

    def log_prob(self, w: Tensor) -> Tensor:
        df = self.df
        z = (w - self.loc) / self.scale
        const = (
            torch.lgamma(0.5 * (df + 1.0)) - torch.lgamma(0.5 * df) - 0.5 * torch.log(df * math.pi) - torch.log(self.scale)
        )
        return const - 0.5 * (df + 1.0) * torch.log1p(z * z / df)

    def extra_repr(self) -> str:
        return f"loc={fmt(self.loc)}, scale={fmt(self.scale)}, df={float(self.df):g}"
