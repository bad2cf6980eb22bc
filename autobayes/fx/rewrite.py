"""Rewriting a traced graph into a Bayesian forward that returns ``(output, kl)``.

The graph was traced from the deterministic model; :func:`autobayes.fx.convert.convert_modules` has since swapped
its layers in place (same qualified names, so every ``call_module`` node still resolves). The passes:

1. **Parameter reads** (``get_attr`` nodes). A read of a converted layer's ``weight`` / ``bias`` becomes a
   ``call_module`` of its posterior (``<owner>.weight_posterior``): a sample, or the mean under
   :func:`autobayes.use_mean`. A raw parameter whose value reaches a weight argument of ``F.linear``,
   ``F.conv*``, ``matmul``, ``addmm``, ``einsum``, ... -- directly or through input-independent ops such as a weight
   standardisation -- becomes Bayesian too: its owner gets a posterior attribute ``<owner>.<param>_posterior``
   (a :class:`~autobayes.nn.BayesParameter`) and the read becomes a sample. Buffers never become Bayesian;
   parameters used otherwise (layer-scale gammas, position embeddings, norm weights) stay deterministic, and so
   does a tied tensor that :func:`~autobayes.fx.convert.convert_modules` left deterministic (patching one owner
   would untie it; see :mod:`autobayes.fx.ties`).
2. **One sample per parameter per forward**: repeated reads of the same posterior share one draw. (A Bayesian
   *layer* called twice draws a weight per call; its KL still counts once.)
3. **KL threading**: one ``total_kl(layer, ...)`` node over the Bayesian layers and stand-alone posteriors the
   graph uses -- including those inside opaque leaf modules -- each counted once (it concatenates the tensors
   whose KL has one per-element form, see :func:`autobayes.kl.fused_kl`), and the output node rewritten to
   ``(output, kl)``.

:func:`install_fx_root` then compiles the rewritten graphs into the root's forward (the ``"fx"`` root mixin of
:mod:`autobayes.fx.derive`).
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..config import BayesConfig
from ..nn import BayesLayer, BayesParameter
from .convert import patch_attributes, select_layer
from .derive import base_class, compile_forwards, set_class
from .report import ConversionReport, LayerRecord
from .runtime import FORWARD_CODE, kl_units, total_kl
from .ties import find_ties

__all__ = ["rewrite_graph", "kl_units_of_graph", "compile_graph", "install_fx_root", "input_dependent", "WEIGHT_OPS"]

_CONV_TYPES = {
    F.conv1d: nn.Conv1d, F.conv2d: nn.Conv2d, F.conv3d: nn.Conv3d,
    F.conv_transpose1d: nn.ConvTranspose1d, F.conv_transpose2d: nn.ConvTranspose2d, F.conv_transpose3d: nn.ConvTranspose3d,
}
#: call_function targets that consume weights -> (layer type they count as, positions of weight arguments or None=all)
WEIGHT_OPS: Dict[Callable, Tuple[type, Optional[Tuple[int, ...]], Tuple[str, ...]]] = {
    F.linear: (nn.Linear, (1, 2), ("weight", "bias")),
    F.bilinear: (nn.Linear, (2, 3), ("weight", "bias")),
    torch.matmul: (nn.Linear, None, ()),
    operator.matmul: (nn.Linear, None, ()),
    torch.mm: (nn.Linear, None, ()),
    torch.bmm: (nn.Linear, None, ()),
    torch.mv: (nn.Linear, None, ()),
    torch.addmm: (nn.Linear, None, ()),
    torch.baddbmm: (nn.Linear, None, ()),
    torch.addmv: (nn.Linear, None, ()),
    torch.einsum: (nn.Linear, None, ()),
    torch.tensordot: (nn.Linear, None, ()),
    **{fn: (t, (1, 2), ("weight", "bias")) for fn, t in _CONV_TYPES.items()},
}
_WEIGHT_METHODS = {"matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "mv", "addmm", "baddbmm", "addmv"}


# ---------------------------------------------------------------------------------------------------------------
# analysis helpers
# ---------------------------------------------------------------------------------------------------------------
def input_dependent(graph: fx.Graph) -> Set[fx.Node]:
    """The nodes of ``graph`` whose value depends on an input (placeholders and everything computed from them)."""
    dep: Set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder" or any(a in dep for a in node.all_input_nodes):
            dep.add(node)
    return dep


def _weight_args(node: fx.Node) -> Optional[Tuple[type, List[Any]]]:
    if node.op == "call_function" and node.target in WEIGHT_OPS:
        as_type, positions, names = WEIGHT_OPS[node.target]
        if positions is None:
            return as_type, list(node.args) + list(node.kwargs.values())
        args = [node.args[i] for i in positions if i < len(node.args)] + [node.kwargs[k] for k in names if k in node.kwargs]
        return as_type, args
    if node.op == "call_method" and node.target in _WEIGHT_METHODS:
        return nn.Linear, list(node.args) + list(node.kwargs.values())
    return None


def _source_get_attr(value: Any, dep: Set[fx.Node], depth: int = 16) -> Optional[fx.Node]:
    """Follow ``value``'s first-argument chain of input-independent ops back to a ``get_attr`` node."""
    node = value
    while isinstance(node, fx.Node) and depth > 0 and node not in dep:
        if node.op == "get_attr":
            return node
        if node.op not in ("call_function", "call_method") or not node.args:
            return None
        node = node.args[0]
        depth -= 1
    return None


def _resolve(model: nn.Module, target: str) -> Tuple[str, Optional[nn.Module], str]:
    owner_path, _, attr = target.rpartition(".")
    try:
        owner = model.get_submodule(owner_path)
    except AttributeError:
        return owner_path, None, attr
    return owner_path, owner, attr


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


# ---------------------------------------------------------------------------------------------------------------
# the passes
# ---------------------------------------------------------------------------------------------------------------
def _rewrite_parameter_reads(model: nn.Module, graph: fx.Graph, config: BayesConfig, report: ConversionReport) -> None:
    dep = input_dependent(graph)
    tied = {id(t.param): t for t in find_ties(model)}  # ties still raw here are deterministic ones
    functional: Dict[str, type] = {}  # get_attr target -> layer type it counts as
    for node in graph.nodes:
        found = _weight_args(node)
        if found is None:
            continue
        as_type, args = found
        for arg in args:
            src = _source_get_attr(arg, dep)
            if src is not None:
                functional.setdefault(src.target, as_type)

    for node in list(graph.nodes):
        if node.op != "get_attr":
            continue
        owner_path, owner, attr = _resolve(model, node.target)
        if owner is None:
            continue
        posterior = owner._modules.get(attr + "_posterior")
        if isinstance(posterior, BayesParameter) and attr not in owner._parameters:
            pass  # a converted layer / posterior attribute read functionally
        elif isinstance(owner._parameters.get(attr), nn.Parameter) and node.target in functional:
            tname = base_class(owner).__name__
            n = owner._parameters[attr].numel()
            tie = tied.get(id(owner._parameters[attr]))
            if tie is not None:  # left deterministic by convert_modules' tie decision: patching one owner unties it
                if not any(r.name == owner_path and attr in r.params for r in report.records):
                    report.records.append(LayerRecord(owner_path, tname, "skipped", "functional", [attr], n,
                                                      reason=f"tied to {', '.join(tie.names)} (kept deterministic)"))
                continue
            cfg, reason = select_layer(config, owner_path, owner, functional[node.target])
            if cfg is None:
                if not any(r.name == owner_path and attr in r.params for r in report.records):
                    report.records.append(LayerRecord(owner_path, tname, "skipped", "functional", [attr], n, reason=reason))
                continue
            patch_attributes(owner, [attr], cfg)
            # an opt-in layer (an embedding) skipped as a layer, whose weight also feeds a linear op (a tied head)
            report.records[:] = [r for r in report.records
                                 if not (r.name == owner_path and r.status == "skipped" and attr in r.params)]
            report.records.append(
                LayerRecord(owner_path, tname, "bayesian", "functional", [attr], n, 2 * n,
                            reason=f"parameter {attr!r} read in the graph and fed to a weight op")
            )
        else:
            continue
        with graph.inserting_before(node):
            call = graph.call_module(_join(owner_path, attr + "_posterior"))
        node.replace_all_uses_with(call)
        graph.erase_node(node)


def _share_samples(graph: fx.Graph, model: nn.Module) -> None:
    first: Dict[str, fx.Node] = {}
    for node in list(graph.nodes):
        if node.op != "call_module" or node.args or node.kwargs:
            continue
        if not isinstance(model.get_submodule(node.target), BayesParameter):
            continue
        if node.target in first:
            node.replace_all_uses_with(first[node.target])
            graph.erase_node(node)
        else:
            first[node.target] = node


def kl_units_of_graph(model: nn.Module, graph: fx.Graph) -> Dict[str, nn.Module]:
    """``{path: module}``: the Bayesian layers / stand-alone posteriors the graph uses (each object once)."""
    units: Dict[str, nn.Module] = {}
    seen: Set[int] = set()

    def add(path: str, module: nn.Module) -> None:
        if id(module) not in seen:
            seen.add(id(module))
            units[path] = module

    for node in graph.nodes:
        if node.op != "call_module":
            continue
        module = model.get_submodule(node.target)
        parent_path = node.target.rpartition(".")[0]
        parent = model.get_submodule(parent_path)
        if isinstance(module, BayesParameter) and isinstance(parent, BayesLayer):
            add(parent_path, parent)  # a converted layer's weight read in the graph: the layer's KL
            continue
        # a Bayesian layer, a stand-alone posterior, or an opaque leaf with Bayesian layers / posteriors inside
        for sub, m in kl_units(module).items():
            add(_join(node.target, sub), m)
    return units


def rewrite_graph(model: nn.Module, graph: fx.Graph, config: BayesConfig, report: ConversionReport) -> Dict[str, nn.Module]:
    """Run the passes on ``graph`` (in place); returns the KL units it uses."""
    _rewrite_parameter_reads(model, graph, config, report)
    _share_samples(graph, model)
    units = kl_units_of_graph(model, graph)
    output = next(n for n in reversed(graph.nodes) if n.op == "output")
    with graph.inserting_before(output):
        total = graph.call_function(total_kl, tuple(graph.get_attr(path) for path in units))
    output.args = ((output.args[0], total),)
    graph.lint()
    return units


# ---------------------------------------------------------------------------------------------------------------
# code generation and the Bayesian root
# ---------------------------------------------------------------------------------------------------------------
def compile_graph(graph: fx.Graph) -> str:
    """Python source (with its imports) of ``graph`` as a ``forward(self, ...)`` method."""
    from torch.fx.graph_module import _format_import_block
    from torch.package import sys_importer

    code = graph.python_code(root_module="self")
    return _format_import_block(code.globals, sys_importer) + "\n" + code.src


def install_fx_root(model: nn.Module, graphs: Dict[str, fx.Graph]) -> None:
    """Give ``model`` the rewritten forward of each mode (``graphs``: ``{"train": g, "eval": g}``)."""
    model.__dict__[FORWARD_CODE] = {mode: compile_graph(g) for mode, g in graphs.items()}
    compile_forwards(model)
    set_class(model, root="fx")
