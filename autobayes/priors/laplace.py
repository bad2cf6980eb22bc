"""Laplace prior Laplace(loc, scale), element-wise."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_kwargs, fmt, positive_buffer
from .base import Prior, register_prior

__all__ = ["LaplacePrior"]


@register_prior("laplace")
class LaplacePrior(Prior):
    """Element-wise ``Laplace(loc, b)``: ``log p(w) = -|w - loc| / b - log(2 b)``, variance ``2 b^2``.

    ``prior_scale`` is ``b``. Heavier tails than the Normal and a cusp at ``loc``: the MAP estimate under it is
    the L1 (lasso) penalty. (Named ``LaplacePrior`` beside the posterior family
    :class:`autobayes.posteriors.Laplace`; its registry name is ``"laplace"``.)

    Example:
        >>> p = LaplacePrior(torch.tensor(0.0), 1.0)
        >>> round(float(p.log_prob(torch.zeros(()))), 6)  # -log 2
        -0.693147
    """

    def __init__(self, loc, scale) -> None:
        super().__init__()
        self.register_buffer("loc", torch.as_tensor(loc, dtype=torch.get_default_dtype()).detach().clone())
        self.register_buffer("scale", positive_buffer(scale, "laplace prior scale", self.loc.dtype))

    @classmethod
    def from_config(cls, loc: Tensor, scale: float, **kwargs) -> "LaplacePrior":
        check_kwargs("laplace", kwargs, ())
        return cls(loc, scale)

    def log_prob(self, w: Tensor) -> Tensor:
        return -(w - self.loc).abs() / self.scale - torch.log(2.0 * self.scale)

    def extra_repr(self) -> str:
        return f"loc={fmt(self.loc)}, scale={fmt(self.scale)}"

