"""Rewriting the capture of a converted model into its Bayesian forward (the capture route, ``mode="export"``).

The converted model (layers swapped, posterior attributes in place, see :mod:`autobayes.fx.convert`) is captured
with ``torch.export`` under posterior means, so every posterior read is a ``get_attr`` of ``<...>_posterior.mu``
in the unlifted graph. The passes, in the spirit of :mod:`autobayes.fx.rewrite`:

1. **Bayesian layers**: an aten ``linear`` / convolution that a Bayesian layer's own forward performed on its
   ``weight_posterior.mu`` (and ``bias_posterior.mu``) becomes a ``call_module`` of that layer, so its forward
   keeps its ``local`` / ``sample`` / ``n_mc`` semantics.
2. **Other posterior reads** (posterior attributes: ``Conv1D.weight``, ``in_proj_weight``, a weight read outside
   its layer): every read of one posterior becomes one ``call_module`` of its
   :class:`~autobayes.nn.BayesParameter` per forward -- one draw shared by all reads, also for a posterior
   registered under two owners (torch.export reads a shared tensor through one name).
3. **KL**: one ``total_kl`` node over the units the graph uses (:func:`autobayes.fx.rewrite.kl_units_of_graph`,
   each counted once), the output rewritten to ``(flat outputs, kl)``.

Lifted constants of the capture become non-persistent buffers of the root (never in the state dict; they follow
``.to(device)``), named ``_autobayes_const_<n>``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import fx, nn

from ..nn import BayesLayer, BayesParameter
from .capture import Captured, export_forward, shape_constraints
from .rewrite import compile_graph, kl_units_of_graph
from .runtime import total_kl

__all__ = ["capture_converted", "capturing", "CAPTURING", "CONSTANT_PREFIX", "REGION_PREFIX", "STATIC"]

#: On an export-mode root, while it is being captured: its forward runs the model's own forward.
CAPTURING = "_autobayes_capturing"
#: Prefix of the root's non-persistent buffers that hold the captures' lifted constants.
CONSTANT_PREFIX = "_autobayes_const_"

#: On an export-mode root: capture with static shapes (its forward fixes sizes torch.export does not declare; see
#: :mod:`autobayes.fx.capture_sizes`).
STATIC = "_autobayes_static"
#: Prefix of the root's attributes (in its ``__dict__``) that hold the bodies of no_grad / autocast regions.
REGION_PREFIX = "_autobayes_region_"

_aten = torch.ops.aten
_LAYER_OPS = {_aten.linear, _aten.conv1d, _aten.conv2d, _aten.conv3d, _aten.convolution,
              _aten.conv_transpose1d, _aten.conv_transpose2d, _aten.conv_transpose3d}
_MISSING = object()


@contextlib.contextmanager
def capturing(root: nn.Module) -> Iterator[None]:
    """Posterior means everywhere and the root's own forward (no graph, no KL) inside the block."""
    params = [m for m in root.modules() if isinstance(m, BayesParameter)]
    previous = [p.use_mean for p in params]
    root.__dict__[CAPTURING] = True
    try:
        for p in params:
            p.use_mean = True
        yield
    finally:
        root.__dict__[CAPTURING] = False
        for p, value in zip(params, previous):
            p.use_mean = value


def _lookup(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        if not isinstance(obj, nn.Module):
            return _MISSING
        for table in (obj._modules, obj._parameters, obj._buffers, obj.__dict__):
            if table.get(part) is not None:
                obj = table[part]
                break
        else:
            return _MISSING
    return obj


def _posterior_of(root: nn.Module, target: str) -> Optional[str]:
    """The path of the :class:`BayesParameter` whose ``mu`` the ``get_attr`` target reads, if any."""
    path, _, attr = target.rpartition(".")
    if attr != "mu" or not path:
        return None
    return path if isinstance(_lookup(root, path), BayesParameter) else None


def _innermost_module(node: fx.Node) -> Optional[str]:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return path if isinstance(path, str) else None


def _add_constant(root: nn.Module, value: torch.Tensor) -> str:
    for name, buf in root._buffers.items():  # the same constant captured again (another mode or structure)
        if name.startswith(CONSTANT_PREFIX) and buf is not None and buf.shape == value.shape and \
                buf.dtype == value.dtype and buf.device == value.device and torch.equal(buf, value):
            return name
    n = sum(1 for name in root._buffers if name.startswith(CONSTANT_PREFIX))
    name = f"{CONSTANT_PREFIX}{n}"
    root.register_buffer(name, value.detach().clone(), persistent=False)
    return name


def _add_region(root: nn.Module, body: nn.Module) -> str:
    """Keep the body of a higher-order op of the capture on ``root`` (``torch.no_grad()`` / ``inference_mode`` /
    autocast regions are ``wrap_with_set_grad_enabled(False, body, ...)`` / ``wrap_with_autocast(...)`` calls of a
    submodule). It goes in the root's ``__dict__``, not among its modules: it is part of one captured forward, not
    of the model (no state-dict keys; never pickled). The body itself is not rewritten: the regions these forwards
    create (sinusoidal position tables computed under ``no_grad``) read no weight; a Bayesian weight read only
    inside such a region would be read at whatever the capture passed in."""
    for name, value in root.__dict__.items():
        if value is body:
            return name
    n = sum(1 for name in root.__dict__ if name.startswith(REGION_PREFIX))
    name = f"{REGION_PREFIX}{n}"
    root.__dict__[name] = body
    return name


def _rewrite_layers(root: nn.Module, graph: fx.Graph) -> None:
    """Pass 1: a layer op of a Bayesian layer's own forward becomes a call of that layer, when it is the only
    operation of that forward (so the call repeats nothing: a padding mode's ``F.pad``, say, stays outside)."""
    ops_in: Dict[Optional[str], int] = {}
    for node in graph.nodes:
        if node.op == "call_function":
            scope = _innermost_module(node)
            ops_in[scope] = ops_in.get(scope, 0) + 1
    for node in list(graph.nodes):
        if node.op != "call_function" or getattr(node.target, "overloadpacket", None) not in _LAYER_OPS:
            continue
        weight = node.args[1] if len(node.args) > 1 else None
        if not isinstance(weight, fx.Node) or weight.op != "get_attr":
            continue
        posterior = _posterior_of(root, weight.target)
        layer_path = posterior.rpartition(".")[0] if posterior else None
        if posterior is None or not posterior.endswith("weight_posterior") or _innermost_module(node) != layer_path:
            continue
        if ops_in.get(layer_path) != 1:
            continue
        layer = _lookup(root, layer_path)
        if not isinstance(layer, BayesLayer) or layer.weight_posterior is not _lookup(root, posterior):
            continue
        bias = node.args[2] if len(node.args) > 2 else None
        if (layer.bias_posterior is None) != (bias is None):
            continue
        if bias is not None and not (isinstance(bias, fx.Node) and bias.op == "get_attr"
                                     and _lookup(root, bias.target) is layer.bias_posterior.mu):
            continue
        with graph.inserting_before(node):
            call = graph.call_module(layer_path, (node.args[0],))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        graph.erase_node(node)


def _rewrite_reads(root: nn.Module, graph: fx.Graph) -> None:
    """Lifted constants to buffers of the root; pass 2: every other posterior read to one draw per forward."""
    first_op = next((n for n in graph.nodes if n.op not in ("placeholder", "get_attr")), None)
    draws: Dict[int, fx.Node] = {}
    for node in list(graph.nodes):
        if node.op != "get_attr":
            continue
        value = _lookup(root, node.target)
        if value is _MISSING:  # a lifted constant of the capture, or the body of a no_grad / autocast region
            held = _lookup(node.graph.owning_module, node.target)
            node.target = _add_region(root, held) if isinstance(held, nn.Module) else _add_constant(root, held)
            continue
        posterior = _posterior_of(root, node.target)
        if posterior is None:
            continue
        if not node.users:
            graph.erase_node(node)
            continue
        module = _lookup(root, posterior)
        call = draws.get(id(module))
        if call is None:
            with graph.inserting_before(first_op):
                call = draws[id(module)] = graph.call_module(posterior)
        node.replace_all_uses_with(call)
        graph.erase_node(node)


def _finish(root: nn.Module, graph: fx.Graph) -> Tuple[str, ...]:
    """Pass 3 and cleaning: drop the guards call and the pytree codegen, thread the KL into the output."""
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)
    graph._codegen = fx.graph.CodeGen()
    units = kl_units_of_graph(root, graph)
    output = next(n for n in reversed(graph.nodes) if n.op == "output")
    flat = output.args[0]
    flat = tuple(flat) if isinstance(flat, (tuple, list)) else (flat,)
    with graph.inserting_before(output):
        total = graph.call_function(total_kl, tuple(graph.get_attr(path) for path in units))
    output.args = ((flat, total),)
    graph.eliminate_dead_code()
    graph.lint()
    return tuple(units)


def capture_converted(root: nn.Module, args: Sequence[Any], kwargs: Dict[str, Any]) -> Tuple[Captured, List[str]]:
    """Capture the converted ``root`` on ``(args, kwargs)`` in its current mode and build its Bayesian forward.

    Returns the :class:`~autobayes.fx.capture.Captured` forward and notes. Raises what torch.export raises.
    """
    from torch.fx.graph_module import _forward_from_src

    with capturing(root):
        program, notes = export_forward(root, args, kwargs, dynamic=not root.__dict__.get(STATIC))
    module = program.module()
    graph = module.graph
    fixed, lower = shape_constraints(program, graph)
    _rewrite_layers(root, graph)
    _rewrite_reads(root, graph)
    graph.owning_module = root  # its targets now name the root's modules and buffers
    units = _finish(root, graph)
    source = compile_graph(graph)
    out_spec = program.call_spec.out_spec
    return Captured(_forward_from_src(source, {}), out_spec, source, fixed, lower, units), notes
