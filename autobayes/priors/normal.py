"""Normal prior N(loc, scale^2), element-wise."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Prior, register_prior

__all__ = ["Normal"]


@register_prior("normal")
class Normal(Prior):
    """Element-wise ``N(loc, scale^2)``. ``loc`` is a scalar or a tensor of the weight's shape (a prior centred on
    pretrained weights); ``scale`` a positive scalar or tensor.

    Example:
        >>> p = Normal(torch.tensor(0.0), 1.0)
        >>> round(float(p.log_prob(torch.zeros(()))), 4)  # -log(2 pi) / 2
        -0.9189
    """

    def __init__(self, loc, scale) -> None:
        super().__init__()
        self.register_buffer("loc", torch.as_tensor(loc, dtype=torch.get_default_dtype()).detach().clone())
        self.register_buffer("scale", torch.as_tensor(scale, dtype=self.loc.dtype).detach().clone())

    def log_prob(self, w: Tensor) -> Tensor:
        z = (w - self.loc) / self.scale
        return -0.5 * z * z - torch.log(self.scale) - 0.5 * math.log(2.0 * math.pi)

    def extra_repr(self) -> str:
        loc = f"tensor{tuple(self.loc.shape)}" if self.loc.dim() else f"{float(self.loc):g}"
        scale = f"tensor{tuple(self.scale.shape)}" if self.scale.dim() else f"{float(self.scale):g}"
        return f"loc={loc}, scale={scale}"
