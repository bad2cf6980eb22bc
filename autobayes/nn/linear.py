"""Bayesian ``nn.Linear``."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .base import BayesLayer

__all__ = ["BayesLinear"]


class BayesLinear(BayesLayer):
    """Bayesian twin of ``nn.Linear``: same arguments, plus ``config``.

    Example:
        >>> layer = BayesLinear(20, 10, config=BayesConfig(posterior="gaussian"))
        >>> layer(torch.randn(5, 20)).shape
        torch.Size([5, 10])
    """

    _DETERMINISTIC = nn.Linear

    def _copy_hyperparameters(self, twin: nn.Linear) -> None:
        self.in_features = twin.in_features
        self.out_features = twin.out_features

    def _twin_kwargs(self) -> Dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias_posterior is not None}

    def _op(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return F.linear(x, weight, bias)
