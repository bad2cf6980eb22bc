"""The prior contract: an ``nn.Module`` whose tensors are buffers, so it is saved with the model's state."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from ..registry import Registry

__all__ = ["Prior", "PRIORS", "register_prior"]

#: Registry of prior families, by name.
PRIORS: Registry[type] = Registry("prior")


def register_prior(name: str):
    """Class decorator registering a :class:`Prior` subclass under ``name``."""

    return PRIORS.register_subclass(name, Prior)


class Prior(nn.Module):
    """An element-wise prior ``p(w) = prod_j p_j(w_j)`` over one weight tensor.

    Subclasses implement :meth:`log_prob` (element-wise log-density) and :meth:`from_config`. Keep every tensor
    in a buffer: priors are restored by ``load_state_dict``.
    """

    name: str = ""

    def log_prob(self, w: Tensor) -> Tensor:
        """Element-wise log-density at ``w`` (broadcasts over leading sample dimensions)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, loc: Tensor, scale: float, **kwargs: Any) -> "Prior":
        """Build the prior of one tensor: ``loc`` is a 0-dim tensor or a tensor of the weight's shape."""
        return cls(loc, scale, **kwargs)
