"""Bayesian layers."""

from ..kl.fused import fused_kl  # the fused KL lives in autobayes.kl; re-exported here, where it was documented
from .base import BayesLayer
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
from .mappings import ATTRIBUTE_LAYERS, DEFAULT_MAPPINGS, OPT_IN_LAYER_TYPES, get_default_mappings
from .parameter import BayesParameter
from .rank1 import Rank1Parameter
from .rnn import BayesGRU, BayesLSTM, BayesRNN

__all__ = [
    "BayesLayer",
    "BayesParameter",
    "Rank1Parameter",
    "fused_kl",
    "BayesLinear",
    "BayesConv1d",
    "BayesConv2d",
    "BayesConv3d",
    "BayesConvTranspose1d",
    "BayesConvTranspose2d",
    "BayesConvTranspose3d",
    "BayesLSTM",
    "BayesGRU",
    "BayesRNN",
    "BayesEmbedding",
    "BayesEmbeddingBag",
    "DEFAULT_MAPPINGS",
    "ATTRIBUTE_LAYERS",
    "OPT_IN_LAYER_TYPES",
    "get_default_mappings",
]
