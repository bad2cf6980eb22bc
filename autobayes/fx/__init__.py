"""The torch.fx route of :func:`autobayes.bayesify` (tracer, graph rewriting, report) and its swap-mode fallback.

Kept apart from ``nn/``, ``posteriors/`` and ``kl/`` so that another capture route (torch.export) can sit beside
it.
"""

from .report import ConversionReport, LayerRecord
from .rewrite import WEIGHT_OPS, compile_graph, install_fx_root, rewrite_graph
from .swap import BayesOutput, convert_modules, kl_of, make_swap_root, select_layer, sum_kl, total_kl
from .tracer import BayesTracer, TraceFailure, is_leaf, leaf_ancestors, trace_modes

__all__ = [
    "BayesTracer",
    "TraceFailure",
    "trace_modes",
    "is_leaf",
    "leaf_ancestors",
    "rewrite_graph",
    "compile_graph",
    "install_fx_root",
    "WEIGHT_OPS",
    "convert_modules",
    "make_swap_root",
    "select_layer",
    "total_kl",
    "kl_of",
    "sum_kl",
    "BayesOutput",
    "ConversionReport",
    "LayerRecord",
]
