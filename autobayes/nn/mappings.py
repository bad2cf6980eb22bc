"""The table from deterministic layer types to their Bayesian twins."""

from __future__ import annotations

from typing import Dict, List, Tuple

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
from .embedding import BayesEmbedding, BayesEmbeddingBag
from .linear import BayesLinear
from .rnn import BayesGRU, BayesLSTM, BayesRNN

__all__ = ["DEFAULT_MAPPINGS", "ATTRIBUTE_LAYERS", "OPT_IN_LAYER_TYPES", "get_default_mappings"]

DEFAULT_MAPPINGS: Dict[type, type] = {
    nn.Linear: BayesLinear,
    nn.Conv1d: BayesConv1d,
    nn.Conv2d: BayesConv2d,
    nn.Conv3d: BayesConv3d,
    nn.ConvTranspose1d: BayesConvTranspose1d,
    nn.ConvTranspose2d: BayesConvTranspose2d,
    nn.ConvTranspose3d: BayesConvTranspose3d,
    nn.LSTM: BayesLSTM,
    nn.GRU: BayesGRU,
    nn.RNN: BayesRNN,
    nn.Embedding: BayesEmbedding,
    nn.EmbeddingBag: BayesEmbeddingBag,
}

#: Layers made Bayesian in place through posterior *attributes* (:mod:`autobayes.fx.convert`): the module keeps its
#: own forward, and its ``weight`` / ``bias`` attributes return posterior samples. Running statistics stay buffers.
ATTRIBUTE_LAYERS: Dict[type, Tuple[str, ...]] = {
    nn.BatchNorm1d: ("weight", "bias"),
    nn.BatchNorm2d: ("weight", "bias"),
    nn.BatchNorm3d: ("weight", "bias"),
    nn.LayerNorm: ("weight", "bias"),
    nn.GroupNorm: ("weight", "bias"),
    nn.RMSNorm: ("weight",),
}

#: The types ``layer_types=None`` leaves deterministic: ``layer_types`` must name them (``["Linear", "Embedding"]``).
#: Read live: a type appended here becomes opt-in.
OPT_IN_LAYER_TYPES: List[type] = [nn.Embedding, nn.EmbeddingBag, *ATTRIBUTE_LAYERS]

# BayesConfig(layer_types=...) accepts the tables' keys, without importing nn/
register_layer_table(DEFAULT_MAPPINGS, opt_in=OPT_IN_LAYER_TYPES)
register_layer_table(ATTRIBUTE_LAYERS, opt_in=OPT_IN_LAYER_TYPES)


def get_default_mappings() -> Dict[type, type]:
    """A copy of the deterministic type -> Bayesian type table (exact types; edit the copy freely)."""
    return dict(DEFAULT_MAPPINGS)
