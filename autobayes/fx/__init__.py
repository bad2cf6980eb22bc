"""The conversion routes of :func:`autobayes.bayesify`: torch.fx (tracer, graph rewriting, report), the capture
route (torch.export: ``capture``, ``capture_graph``, ``capture_root``; ``routes`` picks it or swap mode after fx)
and the swap-mode fallback.

Kept apart from ``nn/``, ``posteriors/`` and ``kl/``. ``runtime`` is what every converted model runs (its output
type and KL); ``derive`` the derived classes and the root mixins of the routes; ``convert`` the module-level
conversion every route shares, with ``ties`` (a tensor shared by several modules is one random variable);
``tracer`` / ``rewrite`` the fx route, ``swap`` the fallback (and its recording run for weights used
functionally); ``report`` what was converted and why.
"""

from ..kl.fused import sum_kl
from .capture import export_forward, functional_weights
from .capture_root import ExportRoot, build_export
from .convert import convert_modules, select_layer
from .report import ConversionReport, LayerRecord, TieRecord
from .rewrite import WEIGHT_OPS, compile_graph, install_fx_root, rewrite_graph
from .runtime import BayesOutput, kl_of, kl_units, total_kl
from .swap import make_swap_root, record_functional_weights
from .ties import find_ties
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
    "export_forward",
    "functional_weights",
    "build_export",
    "ExportRoot",
    "convert_modules",
    "make_swap_root",
    "record_functional_weights",
    "find_ties",
    "select_layer",
    "kl_units",
    "total_kl",
    "kl_of",
    "sum_kl",
    "BayesOutput",
    "ConversionReport",
    "LayerRecord",
    "TieRecord",
]
