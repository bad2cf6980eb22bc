"""The table from deterministic layer types to their Bayesian twins."""

from __future__ import annotations

from typing import Dict

from torch import nn

from ..config import register_layer_table
from .conv import (
    BayesConv1d,
    BayesConv2d,
    BayesConv3d,
    BayesConvTranspose1d,
    BayesConvTranspose2d,
    BayesConvTranspose3d,
)
from .linear import BayesLinear

__all__ = ["DEFAULT_MAPPINGS", "get_default_mappings"]

DEFAULT_MAPPINGS: Dict[type, type] = {
    nn.Linear: BayesLinear,
    nn.Conv1d: BayesConv1d,
    nn.Conv2d: BayesConv2d,
    nn.Conv3d: BayesConv3d,
    nn.ConvTranspose1d: BayesConvTranspose1d,
    nn.ConvTranspose2d: BayesConvTranspose2d,
    nn.ConvTranspose3d: BayesConvTranspose3d,
}
register_layer_table(DEFAULT_MAPPINGS)  # BayesConfig(layer_types=...) accepts its keys, without importing nn/


def get_default_mappings() -> Dict[type, type]:
    """A copy of the deterministic type -> Bayesian type table (exact types; edit the copy freely)."""
    return dict(DEFAULT_MAPPINGS)
